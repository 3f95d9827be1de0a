"""Every bundled sample reads in its documented format without a malformed row; licences are beside them."""
from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from ingest.readers import open_inputs, sniff_format


@pytest.mark.parametrize("rel,fmt,rows", [
    ("iot23/CTU-Honeypot-Capture-4-1-labeled.csv", "zeek-csv", 452),
    ("netflow/handmade-nf-v3.csv", "netflow", 110),
    ("cic/handmade-cicflowmeter.csv", "cic", 110),
    ("fdh/fdh-transactions-2018-04-01-to-21-customers-mod20.parquet", "fdh", 10384),
])
def test_sample_reads_clean(samples, rel, fmt, rows):
    p = samples / rel
    r = open_inputs([p])
    t = pa.Table.from_batches(list(r), schema=r.schema)
    assert r.formats == [fmt] and t.num_rows == rows and r.stats.malformed == {}


def test_handmade_netflow_and_cic_agree(samples):
    nf = pa.Table.from_batches(list(open_inputs([samples / "netflow/handmade-nf-v3.csv"])))
    cic = pa.Table.from_batches(list(open_inputs([samples / "cic/handmade-cicflowmeter.csv"])))
    # the same synthetic flows in two formats: same endpoints, times and labels
    for col in ("ts", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "label"):
        assert nf[col].to_pylist() == cic[col].to_pylist(), col
    assert Counter(nf["attack"].to_pylist()) == {None: 60, "scanning": 30, "bruteForce": 20}
    assert Counter(cic["attack"].to_pylist()) == {None: 60, "PortScan": 30, "SSH-Patator": 20}


def test_sample_pcaps_and_licences(samples):
    pcaps = sorted((samples / "suricata-verify").glob("*.pcap"))
    assert len(pcaps) >= 5 and all(sniff_format(p) == "pcap" for p in pcaps)
    r = open_inputs(pcaps)
    t = pa.Table.from_batches(list(r), schema=r.schema)
    assert t.num_rows >= len(pcaps)
    assert (samples / "suricata-verify" / "LICENSE").read_text().startswith("MIT") or \
        "Permission is hereby granted" in (samples / "suricata-verify" / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in (samples / "stratosphere" / "LICENSE").read_text()
    notice = (samples / "NOTICE.md").read_text()
    for needle in ("GPL-2.0", "10.5281/zenodo.4743746", "MIT", "Le Borgne", "LUFlow"):
        assert needle in notice
