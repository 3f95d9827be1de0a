"""The trained ModelBundle end to end through Kafka: the daemon's alerts match `graphsentry score`.

A small model is trained on the bundled Stratosphere sample (random encoder + kNN: seconds), the
sample is replayed into a topic with `graphsentry replay`, the daemon scores it from the topic and
writes alerts to an alert topic; `graphsentry score --stream-order` scores the same file with the
same model and the same lateness. Every daemon alert must be the aggregation of exactly the records
`score` flags for that (window, source endpoint, technique), with the same max score.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detector.alerts import alert_key
from detector.daemon import Daemon, load_config
from ingest.kafka_io import iter_topic
from kafka_fixtures import new_topic
from training.cli import main

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "m"
    rc = main(["train", "--data", str(SAMPLE), "--out", str(out), "--epochs", "1", "--objective", "none",
               "--window", "10m", "--detector", "knn", "--no-progress"])
    assert rc == 0 and (out / "config.json").exists()
    return out


def test_alert_topic_matches_graphsentry_score(kafka_bootstrap, tiny_model, tmp_path, capsys):
    topic, atopic = new_topic(kafka_bootstrap, 1), new_topic(kafka_bootstrap, 1, "alerts")
    assert main(["replay", str(SAMPLE), "--bootstrap", kafka_bootstrap, "--topic", topic, "--speed", "max",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["records"] == 1500
    cfg = load_config(overrides={
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": kafka_bootstrap, "topic": topic, "group_id": "g-bundle", "stop_at_end": True},
        "model": {"path": str(tiny_model), "watch": False},
        "alerts": {"sinks": [{"type": "kafka", "topic": atopic}]},
        "metrics": {"port": 0},
    }, env={})
    d = Daemon(cfg, install_signals=False)
    s = d.run()
    assert cfg["window"]["size"] == 600.0                      # taken from the model
    assert s.records_in == 1500 and s.records_scored + s.late == 1500

    assert main(["score", str(SAMPLE), "--model", str(tiny_model), "--out", str(tmp_path / "s.parquet"),
                 "--stream-order"]) == 0
    sc = pq.read_table(tmp_path / "s.parquet")
    from ingest.readers import open_inputs

    src = pa.Table.from_batches(list(open_inputs([str(SAMPLE)])))
    assert sc.column("row").to_pylist() == src.column("row").to_pylist()
    assert s.late == sum(r == "late" for r in sc.column("reason").to_pylist())

    size = 600.0
    ts = sc.column("ts").cast(pa.int64()).to_numpy() / 1e6
    ref = defaultdict(lambda: [0, -np.inf])
    for i, (al, tech, score, sip) in enumerate(zip(sc.column("alert").to_pylist(), sc.column("top_technique").to_pylist(),
                                                     sc.column("score").to_pylist(), src.column("src_ip").to_pylist())):
        if al:
            k = (round(float(np.floor(ts[i] / size) * size), 6), sip, tech or "none")
            ref[k][0] += 1
            ref[k][1] = max(ref[k][1], score)
    got = [json.loads(m.value) for m in iter_topic(kafka_bootstrap, atopic, idle_s=1.5)]
    assert ref, "the model flags something on this capture"
    assert sorted(alert_key(a) for a in got) == sorted(ref)
    for a in got:
        count, best = ref[alert_key(a)]
        assert a["unmapped"]["count"] == count
        assert a["unmapped"]["score"] == pytest.approx(best, rel=1e-4, abs=1e-5)
        assert a["metadata"]["product"]["version"] == s.model_version
