"""`graphsentry ingest` end to end on the bundled samples (real files, real Parquet output)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from ingest.schema import FLOW_SCHEMA, TX_SCHEMA
from training.cli import main


def test_ingest_cli_samples(samples, tmp_path, capsys):
    out = tmp_path / "flows.parquet"
    files = sorted(str(p) for p in (samples / "stratosphere").glob("*.labeled"))
    rc = main(["ingest", *files, "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "rows read: 3000" in text and "malformed: 0" in text and "records/s" in text and "elapsed:" in text
    t = pq.read_table(out)
    assert t.schema.equals(FLOW_SCHEMA, check_metadata=False) and t.num_rows == 3000
    assert t["row"].to_pylist() == list(range(3000))


def test_ingest_cli_dead_letters_and_reasons(tmp_path, capsys):
    src = tmp_path / "flows.jsonl"
    src.write_text('{"ts": 1, "src_ip": "a", "dst_ip": "b"}\nnot json\n{"ts": 2, "src_ip": "a", "dst_ip": "b", "dst_port": -1}\n')
    out, dl = tmp_path / "o.parquet", tmp_path / "dead.jsonl"
    assert main(["ingest", str(src), "--out", str(out), "--dead-letter", str(dl), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "rows read: 1" in text and "malformed: 2 (bad_dst_port=1, bad_json=1)" in text
    assert [json.loads(l)["reason"] for l in dl.read_text().splitlines()] == ["bad_json", "bad_dst_port"]


def test_ingest_cli_transactions(samples, tmp_path, capsys):
    out = tmp_path / "tx.parquet"
    assert main(["ingest", str(samples / "fdh" / "fdh-transactions-2018-04-01-to-21-customers-mod20.parquet"),
                 "--out", str(out), "--no-progress"]) == 0
    assert "kind:      transactions" in capsys.readouterr().out
    assert pq.read_table(out).schema.equals(TX_SCHEMA, check_metadata=False)


def test_ingest_cli_unknown_format_is_a_clear_error(tmp_path, capsys):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    # an input of unknown layout is skipped as unreadable; with nothing else to read: exit 3
    assert main(["ingest", str(p), "--out", str(tmp_path / "o.parquet")]) == 3
    assert "known formats are zeek" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists() and not (tmp_path / "o.parquet.part").exists()


def test_ingest_help_lists_formats(capsys):
    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    text = capsys.readouterr().out
    for name in ("zeek", "luflow", "netflow", "pcap", "fdh", "--dead-letter", "--mapping"):
        assert name in text


def test_iot23_original_tsv_merged_label_column(tmp_path):
    """IoT-23's own conn.log.labeled squeezes 'tunnel_parents label detailed-label' into one column."""
    from ingest.readers import open_inputs
    import pyarrow as pa
    p = tmp_path / "conn.log.labeled"
    p.write_text(
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
        "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\t"
        "resp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\t"
        "resp_pkts\tresp_ip_bytes\ttunnel_parents   label   detailed-label\n"
        "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\t"
        "count\tstring\tcount\tcount\tcount\tcount\tset[string]   string   string\n"
        "1525879831.015811\tCUmrqr4svHuSXJy5z7\t192.168.100.103\t51524\t65.127.233.163\t23\ttcp\t-\t2.999051\t0\t0\t"
        "S0\t-\t-\t0\tS\t3\t180\t0\t0\t-   Malicious   PartOfAHorizontalPortScan\n"
        "1525879831.025055\tCH98aB3s1kJeq6SFOc\t192.168.100.103\t56305\t63.150.16.171\t23\ttcp\t-\t-\t-\t-\t"
        "S0\t-\t-\t0\tS\t1\t60\t0\t0\t-   Benign   -\n")
    r = open_inputs([p])
    t = pa.Table.from_batches(list(r), schema=r.schema)
    assert t["label"].to_pylist() == [1, 0]
    assert t["attack"].to_pylist() == ["PartOfAHorizontalPortScan", None]
    assert r.stats.malformed == {}
