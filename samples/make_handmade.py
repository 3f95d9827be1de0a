"""Regenerate the project's own hand-made NetFlow v3 and CICFlowMeter-style samples (seeded, deterministic).

    python samples/make_handmade.py

A small benign background (DNS, HTTPS) plus a TCP SYN port scan and an SSH brute force from
one outside address, 2024-05-01 12:00 UTC onwards. Column lists follow the published NF-v3
(Sarhan et al.) and CICFlowMeter (CIC-IDS2017) headers. Synthetic: for format tests and the
quick start only, never for evaluation.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)

NF3 = ("FLOW_START_MILLISECONDS,FLOW_END_MILLISECONDS,IPV4_SRC_ADDR,L4_SRC_PORT,IPV4_DST_ADDR,L4_DST_PORT,"
       "PROTOCOL,L7_PROTO,IN_BYTES,IN_PKTS,OUT_BYTES,OUT_PKTS,TCP_FLAGS,CLIENT_TCP_FLAGS,SERVER_TCP_FLAGS,"
       "FLOW_DURATION_MILLISECONDS,DURATION_IN,DURATION_OUT,MIN_TTL,MAX_TTL,LONGEST_FLOW_PKT,SHORTEST_FLOW_PKT,"
       "MIN_IP_PKT_LEN,MAX_IP_PKT_LEN,SRC_TO_DST_SECOND_BYTES,DST_TO_SRC_SECOND_BYTES,RETRANSMITTED_IN_BYTES,"
       "RETRANSMITTED_IN_PKTS,RETRANSMITTED_OUT_BYTES,RETRANSMITTED_OUT_PKTS,SRC_TO_DST_AVG_THROUGHPUT,"
       "DST_TO_SRC_AVG_THROUGHPUT,NUM_PKTS_UP_TO_128_BYTES,NUM_PKTS_128_TO_256_BYTES,NUM_PKTS_256_TO_512_BYTES,"
       "NUM_PKTS_512_TO_1024_BYTES,NUM_PKTS_1024_TO_1514_BYTES,TCP_WIN_MAX_IN,TCP_WIN_MAX_OUT,ICMP_TYPE,"
       "ICMP_IPV4_TYPE,DNS_QUERY_ID,DNS_QUERY_TYPE,DNS_TTL_ANSWER,FTP_COMMAND_RET_CODE,SRC_TO_DST_IAT_MIN,"
       "SRC_TO_DST_IAT_MAX,SRC_TO_DST_IAT_AVG,SRC_TO_DST_IAT_STDDEV,DST_TO_SRC_IAT_MIN,DST_TO_SRC_IAT_MAX,"
       "DST_TO_SRC_IAT_AVG,DST_TO_SRC_IAT_STDDEV,Label,Attack").split(",")

CIC = ("Flow ID,Src IP,Src Port,Dst IP,Dst Port,Protocol,Timestamp,Flow Duration,Total Fwd Packet,"
       "Total Bwd packets,Total Length of Fwd Packet,Total Length of Bwd Packet,Flow Bytes/s,Flow Packets/s,"
       "FIN Flag Count,SYN Flag Count,RST Flag Count,PSH Flag Count,ACK Flag Count,Label").split(",")


def flows(rng: random.Random) -> list[dict]:
    out = []
    t = T0
    hosts = [f"192.168.1.{i}" for i in range(10, 16)]
    for _ in range(60):  # benign DNS and HTTPS
        t += timedelta(milliseconds=rng.randint(200, 4000))
        h = rng.choice(hosts)
        if rng.random() < 0.5:
            out.append(dict(t=t, src=h, sp=rng.randint(32768, 60999), dst="192.168.1.1", dp=53, proto=17,
                            ib=rng.randint(60, 90), ip=1, ob=rng.randint(90, 300), op=1, flags=0, dur=rng.randint(1, 30),
                            l7="5.0", label=0, attack="Benign"))
        else:
            ib = rng.randint(800, 3000)
            out.append(dict(t=t, src=h, sp=rng.randint(32768, 60999), dst=f"151.101.{rng.randint(1, 200)}.1", dp=443,
                            proto=6, ib=ib, ip=ib // 400 + 4, ob=ib * rng.randint(2, 20), op=ib // 300 + 6, flags=0x1B,
                            dur=rng.randint(50, 3000), l7="91.0", label=0, attack="Benign"))
    t_scan = T0 + timedelta(seconds=40)
    for i, port in enumerate(sorted(rng.sample(range(1, 1024), 30))):  # SYN scan of one host
        out.append(dict(t=t_scan + timedelta(milliseconds=15 * i), src="203.0.113.66", sp=51515, dst="192.168.1.12",
                        dp=port, proto=6, ib=44, ip=1, ob=40, op=1, flags=0x16, dur=0, l7="0.0", label=1,
                        attack="scanning"))
    t_bf = T0 + timedelta(seconds=90)
    for i in range(20):  # SSH brute force
        out.append(dict(t=t_bf + timedelta(milliseconds=900 * i), src="203.0.113.66", sp=40000 + i,
                        dst="192.168.1.14", dp=22, proto=6, ib=rng.randint(1800, 2400), ip=rng.randint(14, 20),
                        ob=rng.randint(2500, 3200), op=rng.randint(12, 18), flags=0x1F, dur=rng.randint(700, 1500),
                        l7="92.0", label=1, attack="bruteForce"))
    out.sort(key=lambda f: f["t"])
    return out


def write_netflow(fl: list[dict], path: Path) -> None:
    lines = [",".join(NF3)]
    for f in fl:
        ms = int(f["t"].timestamp() * 1000)
        v = {c: 0 for c in NF3}
        v.update({"FLOW_START_MILLISECONDS": ms, "FLOW_END_MILLISECONDS": ms + f["dur"], "IPV4_SRC_ADDR": f["src"],
                  "L4_SRC_PORT": f["sp"], "IPV4_DST_ADDR": f["dst"], "L4_DST_PORT": f["dp"], "PROTOCOL": f["proto"],
                  "L7_PROTO": f["l7"], "IN_BYTES": f["ib"], "IN_PKTS": f["ip"], "OUT_BYTES": f["ob"],
                  "OUT_PKTS": f["op"], "TCP_FLAGS": f["flags"], "FLOW_DURATION_MILLISECONDS": f["dur"],
                  "Label": f["label"], "Attack": f["attack"]})
        lines.append(",".join(str(v[c]) for c in NF3))
    path.write_text("\n".join(lines) + "\n")


def write_cic(fl: list[dict], path: Path) -> None:
    names = {"scanning": "PortScan", "bruteForce": "SSH-Patator", "Benign": "BENIGN"}
    lines = [",".join(CIC)]
    for f in fl:
        dur_us = f["dur"] * 1000
        tot = f["ib"] + f["ob"]
        rate = "Infinity" if dur_us == 0 else f"{tot / (dur_us / 1e6):.3f}"
        prate = "Infinity" if dur_us == 0 else f"{(f['ip'] + f['op']) / (dur_us / 1e6):.3f}"
        fid = f"{f['src']}-{f['dst']}-{f['sp']}-{f['dp']}-{f['proto']}"
        lines.append(",".join(map(str, [
            fid, f["src"], f["sp"], f["dst"], f["dp"], f["proto"], f["t"].strftime("%Y-%m-%d %H:%M:%S.%f"), dur_us,
            f["ip"], f["op"], max(f["ib"] - 40 * f["ip"], 0), max(f["ob"] - 40 * f["op"], 0), rate, prate,
            int(bool(f["flags"] & 1)), int(bool(f["flags"] & 2)), int(bool(f["flags"] & 4)), int(bool(f["flags"] & 8)),
            int(bool(f["flags"] & 16)), names[f["attack"]]])))
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    fl = flows(random.Random(20240501))
    write_netflow(fl, HERE / "netflow" / "handmade-nf-v3.csv")
    write_cic(fl, HERE / "cic" / "handmade-cicflowmeter.csv")
    print(f"wrote {len(fl)} flows to netflow/handmade-nf-v3.csv and cic/handmade-cicflowmeter.csv")
