"""Blocks of the benchmarks page: scoring, the daemon through Kafka, distributed pretraining."""
from __future__ import annotations

from scripts.render.common import Reports, table, thousands

SCORE = "reports/score_bench.json"
SERVE = "reports/serve_bench.json"
SOAK = "reports/serve_soak.json"
TRAIN = "reports/train_bench.json"
DECODE = "reports/json_decode_bench.json"
WINDOW = "reports/window_bench.json"
SERVE_FILE = "reports/serve_file_bench.json"


def render_score(reports: Reports) -> list[str]:
    rep = reports.get(SCORE)
    rows = []
    for r in rep["runs"]:
        rows.append([r["detector"], thousands(r["records"]), f"{len(r['days'])} LUFlow days", r["window"],
                     thousands(r["score_records_per_s"]), thousands(r["stage_records_per_s"]),
                     thousands(r["read_records_per_s"]), f"{r['pretrain_minutes_per_800k_epoch']:.1f}",
                     f"{r['peak_rss_mb']:,}"])
    return table(["detector", "records", "data", "window", "`graphsentry score` records/s (end to end)",
                  "scoring stage records/s", "read records/s", "pretraining min per 800k-flow epoch",
                  "peak RSS MB"], rows)


def _yes(v: bool | None) -> str:
    return "n/a" if v is None else ("met" if v else "**missed**")


def render_serve(reports: Reports) -> list[str]:
    rep = reports.get(SERVE)
    raw, tr, rm = rep["raw_consume_msgs_per_s"], rep["transport"], rep["real_model"]
    score = rm["graphsentry_score"]
    rows = []
    for b in rep["backends"]:
        j, a, r = tr[b]["json"], tr[b]["arrow"], rm[b]
        rows.append([b, thousands(raw[b]), thousands(j["records_per_s"]),
                     f"{j['ratio_to_raw_kafka_python_consume']:.2f} ({_yes(j['ratio_to_raw_kafka_python_consume'] >= 0.7)})",
                     f"{j['ratio_to_own_raw_consume']:.2f}", thousands(a["records_per_s"]),
                     thousands(r["records_per_s"]), f"{r['ratio_to_graphsentry_score']:.2f}"])
    out = [f"Stand-in scorer on {thousands(tr[rep['backends'][0]]['json']['records'])} JSON-per-record messages "
           f"and {thousands(tr[rep['backends'][0]]['arrow']['records'])} records in Arrow batches; the real default "
           f"model on {thousands(score['records'])} JSON messages, against `graphsentry score` on the same records "
           f"({thousands(score['records_per_s'])} records/s).", ""]
    out += table(["consumer backend", "raw consume msg/s", "daemon JSON records/s", "JSON / raw kafka-python (goal 0.7)",
                  "JSON / own raw", "daemon Arrow records/s", "real model, JSON records/s",
                  "real model / `graphsentry score`"], rows)
    lat, low, so = rep["latency"], rep.get("latency_low_rate"), rep["scale_out"]
    out += ["", "| what | measured | goal |", "|---|---|---|",
            f"| event-to-alert p99, real model, {thousands(lat['rate_per_s'])} records/s, {lat['window_s']:.0f} s windows "
            f"(lateness {lat['lateness_s']:.0f} s) | {lat['event_to_alert_p99_s']:.1f} s (p50 "
            f"{lat['event_to_alert_p50_s']:.1f} s; scoring {lat['scoring_s_per_window_mean']:.2f} s per window) | "
            f"<= {lat['goal_p99_s']:.0f} s: {_yes(lat['event_to_alert_p99_s'] <= lat['goal_p99_s'])} |"]
    st = lat.get("stages_s") or {}
    if st:
        out.append("| seconds after a window's end at the same rate, median / max per window | " + ", ".join(
            f"{k} {st[k]['median']:.2f} / {st[k]['max']:.2f}" for k in ("close", "queued", "score", "alerts", "write")
            if k in st) + " | |")
    if low:
        out.append(f"| the same at {thousands(low['rate_per_s'])} records/s | {low['event_to_alert_p99_s']:.1f} s "
                   f"(p50 {low['event_to_alert_p50_s']:.1f} s) | <= {low['goal_p99_s']:.0f} s: "
                   f"{_yes(low['event_to_alert_p99_s'] <= low['goal_p99_s'])} |")
    out.append(f"| two replicas in one group vs one (stand-in, JSON) | {thousands(so['two']['records_per_s'])} vs "
               f"{thousands(so['one']['records_per_s'])} records/s; alert sets "
               f"{'equal' if so['alerts_equal_single_replica'] else '**differ**'} | equal alerts: "
               f"{_yes(so['alerts_equal_single_replica'])} |")
    soak = reports.get(SOAK)["soak"]
    r = soak["rss_mb_every_10s"]
    out.append(f"| RSS over a {soak['stream_seconds'] / 60:.0f}-minute real-time run, real model, "
               f"{thousands(soak['rate_per_s'])} records/s | {min(r):,.0f}-{max(r):,.0f} MB, 2nd to 4th quarter "
               f"{soak['rss_growth_mb_2nd_to_4th_quarter']:+.1f} MB; flagged {100 * soak['flagged_share']:.2f}%; "
               f"event-to-alert p99 {soak['event_to_alert_p99_s']:.1f} s over {soak['windows']} windows | "
               f"flat within 10%: {_yes(reports.get(SOAK)['goals'].get('soak_rss_flat_within_10pct'))}; p99 <= "
               f"{soak['goal_p99_s']:.0f} s: {_yes(soak['event_to_alert_p99_s'] <= soak['goal_p99_s'])} |")
    return out


def render_train(reports: Reports) -> list[str]:
    rep = reports.get(TRAIN)
    rows = []
    for name, r in rep["runs"].items():
        if "epoch_seconds_median" in r:
            rows.append([name, r["processes"], r["threads_per_process"], f"{r['epoch_seconds_median']:.1f}",
                         f"{r['pretrain_seconds']:.1f}", r.get("loadavg_1m_before", "n/a")])
        else:
            rows.append([name, r["processes"], r["threads_per_process"],
                         f"stopped after {r.get('timed_out_after_s', 0):.0f} s", "n/a", r.get("loadavg_1m_before", "n/a")])
    return [f"{rep['data']}; {rep['records']:,} records, {rep['train_windows']:,} training windows.", ""] + table(
        ["run", "processes", "threads each", "epoch s (median)", "pretraining s", "load average before"], rows)


def render_decode(reports: Reports) -> list[str]:
    rep = reports.get(DECODE)
    names = {"whole_poll": "whole poll, `pyarrow.json` (the daemon's path)",
             "per_message_orjson": "orjson per message + one Arrow conversion (its fallback)",
             "per_message_msgspec": "msgspec per message", "per_message_stdlib": "standard library per message",
             "whole_poll_iso_ts": "whole poll, ISO-8601 `ts`", "per_message_orjson_iso_ts": "orjson per message, ISO-8601 `ts`"}
    rows = [[label, f"{rep['decoders'][k]['wall_ms']:.1f}", f"{rep['decoders'][k]['cpu_ms']:.1f}",
             f"{rep['decoders'][k]['gil_us_per_message']:.1f}"] for k, label in names.items() if k in rep["decoders"]]
    return [f"One poll of {rep['messages']:,} flow messages:", ""] + table(
        ["decoder", "wall ms", "CPU ms", "GIL-held µs per message (at most)"], rows)


def render_window(reports: Reports) -> list[str]:
    rep = reports.get(WINDOW)
    names = {"graph": "graph", "knowledge": "knowledge features", "behaviour": "behaviour state", "gnn": "GNN",
             "detector": "detector", "fusion": "fusion", "score_total": "**scoring, total**",
             "alert_build": "findings", "explanations": "explanations", "build_total": "**alerts, total**"}
    rows = [[label, f"{rep['stages'][k]['median']:.3f}", f"{rep['stages'][k]['max']:.3f}",
             f"{rep['stages_cpu'][k]['median']:.3f}" if k in rep.get("stages_cpu", {}) else "n/a"]
            for k, label in names.items() if k in rep["stages"]]
    return [f"{len(rep['windows'])} consecutive windows of {rep['records_per_window']:,} flows, after a {rep['warm_up_s']:.1f} s "
            "warm-up:", ""] + table(["stage", "wall s, median", "wall s, max", "CPU s, median"], rows)


def render_serve_file(reports: Reports) -> list[str]:
    rep = reports.get(SERVE_FILE)
    runs = {"score": "`graphsentry score`", "serve": "`graphsentry serve`, file source",
            "serve_follow": "`graphsentry serve`, file source, `--follow`"}
    rows = [[label, f"{rep[k]['wall_s']:.1f}", thousands(rep[k]["records_per_s"]), f"{rep[k]['cpu_s']:.1f}",
             f"{rep[k]['peak_rss_mb']:,}", thousands(rep[k]["flagged_records"])] for k, label in runs.items() if k in rep]
    return [f"One generated Zeek hour of {rep['records']:,} records from about {rep['distinct_sources_drawn_from']:,} "
            "sources:", ""] + table(["run", "wall s", "records/s", "CPU s", "peak RSS MB", "flagged records"], rows)
