"""`graphsentry demo`: the end-to-end job `make run` runs on the bundled samples.

It chains the same subcommands a user would run, in-process, on the bundled
Stratosphere captures (GPL-2.0, see samples/NOTICE.md):

1. ``ingest``   the 008 capture into the canonical Parquet schema;
2. ``windows``  cut it into 60 s event-time windows and graphs;
3. ``kg stats`` the bundled attack knowledge graph artifact;
4. ``train``    pretrain the spatio-temporal GNN on the benign flows of 008
                (earlier day) and calibrate its threshold on held-back windows;
5. ``serve``    run the daemon on 010 (the later day) with the file source,
                the SQLite alert store and metrics on 127.0.0.1; it stops at
                the end of the file and prints an alert summary.
"""
from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
TRAIN = SAMPLES / "stratosphere" / "full" / "008-zeek-mixed.conn.log.labeled.gz"
TEST = SAMPLES / "stratosphere" / "full" / "010-zeek-mixed.conn.log.labeled.gz"


_SERVE_CONFIG = """\
# written by `graphsentry demo`; see deploy/ for a production config
source:
  type: file
  paths: ["{test}"]
model:
  path: "{model}"
  watch: false
alerts:
  sinks:
    - type: sqlite
      path: "{out}/alerts.db"
    - type: jsonl
      path: "{out}/alerts.jsonl"
  # one finding per ongoing activity: windows of the same (source or destination, technique) less than
  # 10 minutes apart update one finding (docs/findings.md)
  incident_gap: 600
  # the monitored network of these captures (CTU): traffic from outside into it raises severity
  internal_networks: ["147.32.0.0/16"]
window:
  # The window size is the model's (5 min). Zeek writes a connection when it
  # ends, so `ts` (its start) arrives up to minutes out of order: 900 s of
  # allowed lateness keeps ~99% of records in their window on these captures
  # (the rest are counted as late).
  lateness: 900
metrics:
  enabled: true
  host: 127.0.0.1
  port: {port}
"""


def register(subparsers: argparse._SubParsersAction, main: Callable[[list[str]], int]) -> None:
    """Add ``demo``; its steps run through ``main``, the `graphsentry` entry point (training.cli)."""
    p = subparsers.add_parser(
        "demo",
        help="run the main job end to end on the bundled sample data",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="out/demo", help="where the demo writes its outputs (default: out/demo)")
    p.add_argument("--epochs", type=int, default=2, help="pretraining epochs (default: 2)")
    p.add_argument("--metrics-port", type=int, default=9109, help="daemon metrics port on 127.0.0.1 (default: 9109)")
    p.add_argument("--report", default="reports/demo.json",
                   help="JSON report of the figures the demo prints, rendered into README.md (default: reports/demo.json)")
    p.set_defaults(func=functools.partial(run, main=main))


def _step(main: Callable[[list[str]], int], title: str, argv: list[str]) -> None:
    print(f"\n=== {title}\n$ graphsentry {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    rc = main(argv)
    if rc != 0:
        raise SystemExit(f"demo step failed ({title}): exit code {rc}")
    print(f"--- {title}: {time.perf_counter() - t0:.1f} s", flush=True)


def run(args: argparse.Namespace, main: Callable[[list[str]], int]) -> int:
    step = functools.partial(_step, main)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in (TRAIN, TEST):
        if not f.exists():
            raise FileNotFoundError(f"bundled sample missing: {f}")
    model = out / "model"
    step("1/5 ingest the earlier capture", ["ingest", str(TRAIN), "--out", str(out / "008.parquet"),
                                             "--dead-letter", str(out / "dead-letter.jsonl")])
    step("2/5 event-time windows and graphs", ["windows", str(TRAIN), "--window", "60s", "--lateness", "10s"])
    step("3/5 attack knowledge graph (bundled artifact)", ["kg", "stats"])
    step("4/5 pretrain on benign flows of the earlier day",
         ["train", str(TRAIN), "--out", str(model), "--benign-only", "--epochs", str(args.epochs),
          # ip:port nodes (as E-GraphSAGE): with plain ip nodes the monitored host's benign flows inherit
          # the anomaly of the scans it receives on the later day (see the Model section of README.md)
          "--node-mode", "ipport", "--window", "5m", "--no-progress",
          # one encoder: `--objective auto` (the default) pretrains three and keeps the best on validation,
          # about three times the training time, too slow for a first run
          "--objective", "contrastive"])
    config = out / "serve.yaml"
    for name in ("alerts.db", "alerts.db-wal", "alerts.db-shm", "alerts.jsonl"):  # this run's findings only
        (out / name).unlink(missing_ok=True)
    config.write_text(_SERVE_CONFIG.format(test=TEST.resolve(), model=model.resolve(), out=out.resolve(),
                                           port=args.metrics_port))
    step("5/5 daemon on the later day (file source -> SQLite alerts, metrics on 127.0.0.1)",
         ["serve", "--config", str(config), "--summary-json", str(out / "summary.json")])
    _write_report(Path(args.report), out / "summary.json", _alert_quality(TEST, out / "alerts.jsonl"))
    _findings_report(Path(args.report).with_name("findings.json"), out / "alerts.db", out / "alerts.jsonl")
    print(f"\nDone. Outputs in {out}/: model/ (the trained model), alerts.db (SQLite alert store: "
          f"`sqlite3 {out}/alerts.db 'select * from alerts limit 5'`), summary.json, 008.parquet, dead-letter.jsonl")
    print(f"\nOpen the alert page on the demo's alerts (then browse http://127.0.0.1:8080/):\n"
          f"  graphsentry ui --alerts {out}/alerts.db")
    return 0


def _alert_quality(data: Path, alerts_jsonl: Path) -> dict:
    """Compare the flagged records with the capture's labels (labels are used here only, never by the model)."""
    import json

    import numpy as np
    import pyarrow as pa

    from ingest.readers import open_inputs

    table = pa.Table.from_batches(list(open_inputs([str(data)])))
    labels = table["label"].fill_null(-1).to_numpy()
    flagged = np.zeros(len(labels), dtype=bool)
    with open(alerts_jsonl) as fh:
        for line in fh:
            rows = json.loads(line).get("unmapped", {}).get("rows", [])
            flagged[np.asarray(rows, dtype=np.int64)] = True
    mal, ben = labels == 1, labels == 0
    tp, fp = int((flagged & mal).sum()), int((flagged & ben).sum())
    print("\n=== alert quality against the capture's labels (evaluation only)")
    print(f"records {len(labels)}: malicious {int(mal.sum())}, benign {int(ben.sum())}, "
          f"background/unknown {int((~mal & ~ben).sum())}")
    print(f"flagged {int(flagged.sum())}: attack recall {tp / max(int(mal.sum()), 1):.3f}, "
          f"benign false-positive rate {fp / max(int(ben.sum()), 1):.3f}, "
          f"precision {tp / max(tp + fp, 1):.3f}")
    print("(`graphsentry evaluate` runs the full time-ordered evaluation with baselines; see README)")
    return {"records": len(labels), "malicious": int(mal.sum()), "benign": int(ben.sum()),
            "flagged": int(flagged.sum()), "attack_recall": round(tp / max(int(mal.sum()), 1), 3),
            "benign_fpr": round(fp / max(int(ben.sum()), 1), 3), "precision": round(tp / max(tp + fp, 1), 3)}


def _write_report(path: Path, summary_json: Path, quality: dict) -> None:
    """The figures printed above, with the daemon's summary and provenance, as the JSON the README renders."""
    import json

    from training.report_meta import report_meta

    s = json.loads(summary_json.read_text())
    daemon = {k: s.get(k) for k in ("records_in", "records_scored", "late", "malformed", "windows_scored",
                                    "flagged_records", "alerts", "alerts_by_severity")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"report": "graphsentry demo (make run)", **report_meta(),
                                "data": {"train": TRAIN.name, "test": TEST.name}, "daemon": daemon,
                                "alert_quality": quality}, indent=2) + "\n")
    print(f"figures written to {path}")


def _findings_report(path: Path, alerts_db: Path, alerts_jsonl: Path) -> None:
    """Figures of the findings in the store (count, technique none, severity, per key) with provenance, and
    (evaluation only) the capture's labels of the records listed in the findings of each final severity."""
    import json
    from collections import Counter

    import pyarrow as pa

    from detector.alerts.report import findings_figures
    from detector.alerts.sinks import read_alert_store
    from ingest.readers import open_inputs
    from training.report_meta import report_meta

    fig = findings_figures(alerts_db)
    labels = pa.Table.from_batches(list(open_inputs([str(TEST)])))["label"].fill_null(-1).to_pylist()
    severity = {a["finding_info"]["uid"]: a["severity"] for a in read_alert_store(alerts_db)}
    by_sev: dict[str, Counter] = {}
    with open(alerts_jsonl) as fh:  # every write lists (up to 50 of) its window's records
        for line in fh:
            a = json.loads(line)
            c = by_sev.setdefault(severity.get(a["finding_info"]["uid"], a["severity"]), Counter())
            c.update({1: "malicious", 0: "benign"}.get(labels[r], "other") for r in a["unmapped"]["rows"])
    fig["listed_records_by_severity_labels"] = {s: dict(c) for s, c in sorted(by_sev.items())}
    fig["store"] = f"{alerts_db.parent.name}/{alerts_db.name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"report": "graphsentry demo findings (make run)", **report_meta(),
                                "data": {"train": TRAIN.name, "test": TEST.name}, **fig}, indent=2) + "\n")
    print(f"findings: {fig['findings']}, technique none {fig['technique_none_share']:.0%}, "
          f"severity {fig['severity']}, at most {fig['max_findings_per_key_technique']} per key and technique "
          f"-> {path}")
