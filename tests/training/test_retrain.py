"""`graphsentry retrain` end to end with real parts, on the bundled Stratosphere capture.

A tiny champion (random encoder + kNN, benign-only, 10-minute windows) is trained on the first 1500
records of ``008-zeek-mixed`` and registered + promoted. It scores the whole day (5663 records, 24 h;
samples/stratosphere/full) and an ``ArchiveWriter`` archives every record with its score and alert; the
analysts' verdicts CSV clears the alerted benign records and confirms the alerted attacks. Then:

* the default gate on the clean archive: a challenger is registered and the decision is reported with
  its reasons (on this data it is refused: see ``test_clean_archive_default_gate``);
* a gate config for this data (``TEST_GATE``, below) on the clean archive: promoted;
* the contaminated archive (the attacks of the first 70 % of the day unflagged and unlabelled, so they
  enter the training part as if benign): refused, the report says why, the champion untouched;
* ``graphsentry models rollback`` restores the first champion;
* job metrics pushed to a real Pushgateway; the alert rules checked and unit-tested with promtool.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cli_helpers import run_cli
from training.cli import main
from training.registry import Registry

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "stratosphere" / "008-zeek-mixed.conn.log.labeled"
DAY = REPO / "samples" / "stratosphere" / "full" / "008-zeek-mixed.conn.log.labeled.gz"
RULES = REPO / "deploy" / "prometheus" / "retrain-rules.yml"
SINCE = "2022-06-12T00:00:00Z"

# The default gate needs a benign FPR <= 1.5 x 0.01 on the held-out slice. The tiny champion and its
# challengers calibrate on ~55 held-back benign flows, where a conformal threshold cannot resolve 1 %
# (the threshold is then the largest calibration score: about 1/56 ~ 1.8 % expected FPR), and recall
# at a 1 % FPR over the slice's 291 benign flows is decided by its top 2 benign scores. To exercise the
# promotion path this test gates at a 5 % target FPR with 2x headroom; every other rule keeps its default
# (AUPRC/recall margins 0.01, slice drop 0.05, speed 0.9). This is what the data can resolve, not a
# claim about a deployment's settings. The contaminated run is refused under this config too.
# speed_repeats is measurement precision, not a threshold: the slice is ~1170 records (~35 ms of CPU per
# model), and the fastest of 10 runs is steadier on a busy machine than the fastest of 5.
# The score-drift check is switched off here (drift_max_psi: null): the champion's kNN bank holds 270 benign
# flows of the first 1500 records, the challenger's ~1150 of the day, and the lower tail of their benign distance
# scores differs (measured: PSI ~1.9, KS ~0.27 over the 291 benign held-out flows), so the default bound refuses
# it -- as it should: a human looks before such a model goes live. The drift refusal has its own test
# (tests/training/test_gate_refusals.py); this one follows the promotion path.
TEST_GATE = "speed_repeats: 10\ngate:\n  target_fpr: 0.05\n  fpr_factor: 2.0\n  drift_max_psi: null\n"


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("champion") / "m"
    rc = main(["train", "--data", str(SAMPLE), "--out", str(out), "--epochs", "1", "--objective", "none",
               "--window", "10m", "--detector", "knn", "--benign-only", "--no-progress"])
    assert rc == 0
    return out


def _write_archive(champion: Path, d: Path, contaminate: bool) -> tuple[Path, Path]:
    """The day scored by the champion, archived; and the analysts' verdicts on its alerts."""
    from detector.bundle import load_bundle
    from detector.scoring import score_table
    from ingest.archive import ArchiveWriter
    from training.commands import read_table

    t, _ = read_table([str(DAY)])
    s = score_table(load_bundle(champion), t)
    score = s.column("score").to_numpy(zero_copy_only=False)
    alert = np.asarray(s.column("alert").to_numpy(zero_copy_only=False), bool).copy()
    label = t.column("label").to_numpy(zero_copy_only=False).astype(float)
    if contaminate:   # attacks of the first 70 % of the day: not flagged, not labelled
        ts = t.column("ts").cast(pa.int64()).to_numpy() / 1e6
        hidden = (label == 1) & (ts < np.quantile(ts, 0.7))
        alert[hidden] = False
        label[hidden] = np.nan
        t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(label, pa.int8(), mask=np.isnan(label)))
    ids = np.array([f"alert{r:06d}" if a else None for r, a in enumerate(alert)], dtype=object)
    archive = d / "archive"
    with ArchiveWriter(archive) as w:
        w.write(t, scores=score, alerts=alert, alert_ids=ids, model_version="v0001",
                positions={"topic": f"file:{DAY}", "partition": 0, "offset": t.column("row")})
        w.flush()
    verdicts = d / "verdicts.csv"
    lines = ["alert_id,verdict"] + [f"{i},{'malicious' if lab == 1 else 'false_positive'}"
                                    for i, lab in zip(ids, label) if i is not None and lab in (0, 1)]
    verdicts.write_text("\n".join(lines) + "\n")
    return archive, verdicts


@pytest.fixture(scope="module")
def archives(champion, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    out = {}
    for name in ("clean", "contaminated"):
        d = tmp_path_factory.mktemp(name)
        out[name] = _write_archive(champion, d, contaminate=name == "contaminated")
    return out


def _registry(d: Path, champion: Path) -> Registry:
    reg = Registry(d / "registry")
    reg.promote(reg.register(champion, reason="first model"))
    return reg


def _retrain(reg: Registry, archive: tuple[Path, Path], capsys, *extra: str) -> tuple[int, dict, str]:
    rc, out, err = run_cli(["retrain", "--archive", str(archive[0]), "--registry", str(reg.root), "--since", SINCE,
                            "--verdicts", str(archive[1]), *extra], capsys)
    summary = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
    return rc, summary, err


def _checks(report_dir: str) -> dict[str, str]:
    rep = json.loads((Path(report_dir) / "report.json").read_text())
    return {f"{c['name']}{'/' + c['data'] if c['data'] else ''}": c["status"] for c in rep["gate"]["checks"]}


# -- the job -----------------------------------------------------------------------------------------


def test_clean_archive_default_gate(champion, archives, tmp_path, capsys):
    reg = _registry(tmp_path, champion)
    rc, s, err = _retrain(reg, archives["clean"], capsys)
    assert rc == 0, err
    assert "[retrain" in err and "gate:" in err                      # progress on stderr
    assert s["champion"] == "v0001" and s["version"] == "v0002" and reg.versions() == ["v0001", "v0002"]
    rep = json.loads((Path(s["report_dir"]) / "report.json").read_text())
    assert Path(s["report_dir"]).parent == reg.root / "reports"
    for f in ("report.md", "report.json", "pr-holdout.png", "roc-holdout.png"):
        assert (Path(s["report_dir"]) / f).is_file(), f
    d = rep["data"]
    sel = d["training_selection"]
    # every attack of the day is labelled: they leave training; cleared false positives stay
    assert sel["excluded_malicious"] > 3000 and sel["kept_cleared_false_positives"] > 0
    assert d["holdout_from"] > d["train_to"] and d["records_read"] == 5663
    assert not d["sample"]["train"]["sampled"] and not d["sample"]["holdout"]["sampled"]
    assert rep["warm_start"]["used"] is True and rep["warm_start"]["why"]     # the champion's weights
    assert rep["warm_start"]["loaded"] == rep["warm_start"]["of"] > 0
    # the decision follows the checks and is reported with its reasons (on this tiny sample the held-out
    # slice has ~300 benign records, so a 1 % FPR check is coarse: see TEST_GATE); a refusal leaves the
    # champion untouched, a pass promotes
    checks = _checks(s["report_dir"])
    assert checks["alert_volume/holdout"] != "skipped"                   # the default analyst budget applies
    assert checks["score_drift/holdout"] != "skipped"
    assert rep["gate"]["data_sources"]["auprc"] == ["holdout"]           # the archive's labels and verdicts
    assert "Which data each check ran on" in (Path(s["report_dir"]) / "report.md").read_text()
    failed = sorted(k for k, v in checks.items() if v == "failed")
    md = (Path(s["report_dir"]) / "report.md").read_text()
    if failed:
        assert s["decision"] == "refuse" and s["reasons"]
        assert all(any(f.split("/")[0] in r for r in s["reasons"]) for f in failed), (failed, s["reasons"])
        assert "**refused**" in md and "Why refused" in md
        assert reg.aliases() == {"champion": "v0001", "challenger": "v0002"}
    else:
        assert s["decision"] == "promote" and reg.aliases()["champion"] == "v0002"
    meta = reg.metadata("v0002")
    assert meta["parent"] == "v0001" and meta["gate"]["decision"] == s["decision"]
    assert meta["data"]["from"] == d["train_from"] and meta["data"]["to"] == d["train_to"]
    assert meta["data"]["fingerprint"]["records"] > 1000 and meta["metrics"]["retrain"]["auprc_holdout"]
    assert not any((reg.root / ".retrain-tmp").iterdir())           # the work folder is gone


@pytest.fixture(scope="module")
def pushgateway():
    """A real Pushgateway on a free port (skipped when the Debian package is not installed)."""
    exe = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if not exe:
        pytest.skip("prometheus-pushgateway not installed (apt-get install prometheus-pushgateway)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the Pushgateway did not start")
        yield url
    finally:
        p.terminate()
        p.wait(10)


def _pushed(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("graphsentry_retrain_"):
            name, value = line.rsplit(" ", 1)
            out[name.replace('instance="",', "").replace(',instance=""', "")] = float(value)
    return out


def test_promote_then_contaminated_run_is_refused_then_rollback(champion, archives, pushgateway, tmp_path, capsys):
    reg = _registry(tmp_path, champion)
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text(TEST_GATE)
    rc, s, err = _retrain(reg, archives["clean"], capsys, "--config", str(cfg), "--pushgateway", pushgateway)
    assert rc == 0, err
    checks = _checks(s["report_dir"])
    assert s["decision"] == "promote", (s["reasons"], checks)
    assert s["promoted"] and reg.aliases() == {"champion": "v0002", "previous": "v0001"}
    m = _pushed(pushgateway)
    key = 'graphsentry_retrain_gate_passed{job="graphsentry_retrain"}'
    assert m[key] == 1.0 and abs(m['graphsentry_retrain_last_success_timestamp_seconds{job="graphsentry_retrain"}']
                                 - time.time()) < 120
    assert m['graphsentry_retrain_records{job="graphsentry_retrain",part="read"}'] == 5663

    rc, s2, err = _retrain(reg, archives["contaminated"], capsys, "--config", str(cfg), "--pushgateway", pushgateway,
                           "--eval", str(SAMPLE))
    assert rc == 0, err
    checks = _checks(s2["report_dir"])
    # labelled --eval data given: the labelled checks run on it too (and the archive slice, which has labels)
    assert checks["auprc/eval"] in ("passed", "failed") and checks["slices/eval"] in ("passed", "failed")
    assert s2["decision"] == "refuse" and not s2["promoted"]
    # the challenger learnt the unflagged attacks as normal: it misses the labelled attacks of the later slice
    assert checks["auprc/holdout"] == "failed" and checks["recall_at_fpr/holdout"] == "failed"
    assert checks["slices/holdout"] == "failed"
    assert any(r.startswith("recall_at_fpr [holdout]") for r in s2["reasons"])
    md = (Path(s2["report_dir"]) / "report.md").read_text()
    assert "**refused**" in md and "External-Attack-to-Device" in md
    rep = json.loads((Path(s2["report_dir"]) / "report.json").read_text())
    assert rep["data"]["training_selection"]["excluded_malicious"] < 1000      # the hidden attacks stayed in
    # the champion is untouched; the refused model is only the challenger
    assert reg.aliases() == {"champion": "v0002", "previous": "v0001", "challenger": "v0003"}
    assert _pushed(pushgateway)[key] == 0.0

    rc, out, err = run_cli(["models", "rollback", "--registry", str(reg.root), "--reason", "test"], capsys)
    assert rc == 0, err
    assert reg.alias("champion") == "v0001" and "champion: v0001" in out


def test_a_large_archive_is_read_as_whole_blocks_spread_over_time(archives):
    from training.retrain_data import read_recent

    path, verdicts = str(archives["clean"][0]), str(archives["clean"][1])
    kw = {"window_s": 600.0, "holdout_frac": 0.2, "block_s": 3600.0}
    full_t, full_h, full_plan, info = read_recent(path, SINCE, None, verdicts, max_train=10_000, max_holdout=10_000, **kw)
    assert info["records_in_range"] == 5663 == full_t.num_rows + full_h.num_rows
    assert not info["sample"]["train"]["sampled"] and not info["sample"]["holdout"]["sampled"]
    cut_us = full_plan.cut * 1e6
    assert full_t.column("ts").cast(pa.int64()).to_numpy().max() < cut_us <= full_h.column("ts").cast(pa.int64()).to_numpy().min()
    assert abs(full_h.num_rows / 5663 - 0.2) < 0.05 and full_plan.cut % 600 == 0      # cut on a window boundary

    train, hold, plan, info = read_recent(path, SINCE, None, verdicts, max_train=1500, max_holdout=400, **kw)
    s = info["sample"]
    assert s["train"]["sampled"] and s["holdout"]["sampled"] and plan.cut == full_plan.cut
    assert train.num_rows == s["train"]["kept_records"] <= 1500 and hold.num_rows == s["holdout"]["kept_records"] <= 400
    assert train.num_rows > 1000                                   # the pro-rata rule fills most of the cap
    for part, full in ((train, full_t), (hold, full_h)):
        ts = part.column("ts").cast(pa.int64()).to_numpy()
        assert (np.diff(ts) >= 0).all() and part.column("row").to_pylist() == list(range(part.num_rows))
        hours = np.unique(ts // 3_600_000_000)
        fts = full.column("ts").cast(pa.int64()).to_numpy()
        for h in hours:                                            # every kept hour is there whole
            assert (ts // 3_600_000_000 == h).sum() == (fts // 3_600_000_000 == h).sum()
    # kept hours spread over the training part: both ends of the day are represented
    span = full_t.column("ts").cast(pa.int64()).to_numpy()
    kept = train.column("ts").cast(pa.int64()).to_numpy()
    assert kept[0] - span[0] < 4 * 3600e6 and span[-1] - kept[-1] < 4 * 3600e6
    assert set(train.column("verdict").drop_null().to_pylist()) <= {"malicious", "benign"}
    assert plan.hours("holdout") < full_plan.hours("holdout")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_choice_never_passes_the_cap_and_spreads_over_time(seed):
    from training.retrain_data import choose_blocks

    counts = np.random.default_rng(seed).integers(50, 500, 400)          # 400 hours of uneven traffic
    for cap in (1000, 10_000, 50_000, int(counts.sum())):
        keep = choose_blocks(np.arange(400), counts, cap)
        kept = int(counts[keep].sum())
        assert kept <= cap and kept >= min(cap, counts.sum()) - counts.max()   # full up to one block
        if 10_000 <= cap < counts.sum():  # even in time: each quarter of the records gets about a quarter
            quarter = np.minimum((np.cumsum(counts) - counts / 2) * 4 // counts.sum(), 3).astype(int)
            per_quarter = np.bincount(quarter[keep], weights=counts[keep], minlength=4)
            assert (np.abs(per_quarter - kept / 4) <= 0.1 * kept / 4 + counts.max()).all(), per_quarter
    assert choose_blocks(np.arange(3), np.array([10, 10, 10]), 5).sum() == 0   # every block above the cap


def test_a_range_of_one_window_cannot_be_split():
    from training.retrain_data import plan_sample

    with pytest.raises(ValueError, match="at least two windows"):
        plan_sample(np.array([7]), np.array([500]), 600.0, 0.2, 1000, 1000, 3600.0)
    with pytest.raises(ValueError, match="raise max_train_records or shorten sample_block"):
        plan_sample(np.arange(12), np.full(12, 100), 600.0, 0.2, 50, 10_000, 3600.0)


# -- failures never touch the champion -----------------------------------------------------------------


def test_a_failed_run_changes_nothing_and_the_next_starts_clean(champion, archives, tmp_path, capsys):
    reg = _registry(tmp_path, champion)
    stale = reg.root / ".retrain-tmp" / "20260101T000000Z-dead00"      # a killed run's folder: nobody holds its lock
    stale.mkdir(parents=True)
    (stale / ".owner").write_text("999999999\n")
    (stale / "half-written").write_text("x")
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text("min_train_records: 1000000\n")                    # a real failure after reading the archive
    rc, _, err = _retrain(reg, archives["clean"], capsys, "--report-dir", str(tmp_path / "rep"), "--config", str(cfg))
    assert rc == 2 and "min_train_records 1000000" in err and "Traceback" not in err
    assert not stale.exists()                                      # an interrupted run's folder is removed
    assert reg.versions() == ["v0001"] and reg.aliases() == {"champion": "v0001"}
    assert not any((reg.root / ".retrain-tmp").iterdir())
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["status"] == "failed" and "min_train_records" in rep["error"]
    assert "nothing was registered" in (tmp_path / "rep" / "report.md").read_text()


def test_a_run_killed_mid_training_leaves_the_registry_untouched_and_the_next_completes(champion, archives,
                                                                                         tmp_path, capsys):
    import os
    import signal
    import sys

    reg = _registry(tmp_path, champion)
    history = (reg.root / "history.jsonl").read_text()
    cmd = [sys.executable, "-m", "training.cli", "retrain", "--archive", str(archives["clean"][0]), "--registry",
           str(reg.root), "--since", SINCE, "--verdicts", str(archives["clean"][1])]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        for line in p.stderr:                                      # progress lines, one per stage
            if "training the challenger" in line:
                os.kill(p.pid, signal.SIGKILL)
                break
    finally:
        p.kill()
        p.wait(30)
        p.stdout.close()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    left = list((reg.root / ".retrain-tmp").iterdir())
    assert len(left) == 1 and (left[0] / ".owner").exists()       # killed mid-run: its work folder is still there
    assert reg.versions() == ["v0001"] and reg.aliases() == {"champion": "v0001"}
    assert (reg.root / "history.jsonl").read_text() == history and not list(reg.versions_dir.glob(".*"))
    rc, s, err = _retrain(reg, archives["clean"], capsys)          # the next run: no lock to wait for, completes
    assert rc == 0, err
    assert f"removed 1 work folder(s) of interrupted runs: {left[0].name}" in err
    assert s["version"] == "v0002" and reg.versions() == ["v0001", "v0002"]
    assert not any((reg.root / ".retrain-tmp").iterdir()) and not list(reg.versions_dir.glob(".*"))


@pytest.mark.parametrize("text,match", [
    ("gate:\n  auprc_margni: 0.02\n", "unknown key 'gate.auprc_margni'"),
    ("holdout: 0.3\n", "unknown key 'holdout'"),
    ("train:\n  epochz: 2\n", "unknown key 'train.epochz'"),
    ("gate:\n  fpr_factor: 0.5\n", "gate.fpr_factor"),
    ("since: 7d\nsince: 3d\n", "duplicate key"),
    ("- a list\n", "top level must be a mapping"),
])
def test_bad_configs_are_one_line_user_errors(text, match, champion, tmp_path, capsys):
    reg = _registry(tmp_path, champion)
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text(text)
    rc, _, err = run_cli(["retrain", "--archive", str(tmp_path), "--registry", str(reg.root), "--config", str(cfg)],
                         capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and match in lines[0] and "Traceback" not in err, err
    assert reg.versions() == ["v0001"]


def test_config_defaults_and_unquoted_yaml_times(tmp_path):
    from training.retrain import load_config

    d = load_config(None)
    assert (d.since, d.holdout_frac, d.gate.auprc_margin, d.gate.fpr_factor, d.gate.speed_ratio) == ("7d", 0.2, 0.01,
                                                                                                      1.5, 0.9)
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text("since: 2022-06-12\nuntil: 2022-06-14 06:00:00\ntrain: {epochs: 2}\ngate: {alert_budget_per_hour: 20}\n")
    c = load_config(cfg)
    assert c.since == "2022-06-12T00:00:00Z" and c.until.startswith("2022-06-14T06:00:00")
    assert c.train == {"epochs": 2} and c.gate.alert_budget_per_hour == 20


def test_user_errors(champion, archives, tmp_path, capsys):
    rc, _, err = run_cli(["retrain", "--archive", str(archives["clean"][0]), "--registry", str(tmp_path / "none")],
                         capsys)
    assert rc == 2 and "has no champion to retrain from" in err
    reg = _registry(tmp_path, champion)
    rc, _, err = run_cli(["retrain", "--archive", str(archives["clean"][0]), "--registry", str(reg.root)], capsys)
    assert rc == 2 and "no archived records" in err and "widen --since" in err   # the sample is from 2022
    rc, _, err = run_cli(["retrain", "--archive", str(tmp_path / "nope"), "--registry", str(reg.root)], capsys)
    assert rc == 2 and "no such directory" in err
    assert reg.versions() == ["v0001"]


# -- job metrics and alert rules -------------------------------------------------------------------------


def test_a_failure_push_keeps_the_last_success(pushgateway):
    from training.retrain import JOB, job_metrics
    from prometheus_client import pushadd_to_gateway

    pushadd_to_gateway(pushgateway, job=JOB, registry=job_metrics(True, {"gate_passed": True}, 12.0, now=1000.0))
    pushadd_to_gateway(pushgateway, job=JOB, registry=job_metrics(False, {}, 3.0, now=2000.0))
    m = _pushed(pushgateway)
    assert m['graphsentry_retrain_last_success_timestamp_seconds{job="graphsentry_retrain"}'] == 1000.0
    assert m['graphsentry_retrain_last_failure_timestamp_seconds{job="graphsentry_retrain"}'] == 2000.0
    assert m['graphsentry_retrain_duration_seconds{job="graphsentry_retrain"}'] == 3.0


RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:     # a success at t=0, a failed run at t=10h, a success again at t=12h
      - series: 'graphsentry_retrain_last_success_timestamp_seconds{{job="graphsentry_retrain"}}'
        values: '0x720 43200x3000'
      - series: 'graphsentry_retrain_last_failure_timestamp_seconds{{job="graphsentry_retrain"}}'
        values: '_x600 36000x3100'
    alert_rule_test:
      - eval_time: 5h
        alertname: GraphsentryRetrainFailing
        exp_alerts: []
      - eval_time: 11h
        alertname: GraphsentryRetrainFailing
        exp_alerts:
          - exp_labels: {{severity: warning, job: graphsentry_retrain}}
            exp_annotations:
              summary: "the last graphsentry retraining run failed; see its report (REGISTRY/reports/) and the job's log"
      - eval_time: 13h
        alertname: GraphsentryRetrainFailing
        exp_alerts: []
      - eval_time: 59h
        alertname: GraphsentryRetrainStale
        exp_alerts: []
      - eval_time: 61h
        alertname: GraphsentryRetrainStale
        exp_alerts:
          - exp_labels: {{severity: warning, job: graphsentry_retrain}}
            exp_annotations:
              summary: "no graphsentry retraining run has completed for 2d 1h 0m 0s"
"""


def test_alert_rules_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS: 2 rules found" in r.stdout, r.stdout + r.stderr
    t = tmp_path / "retrain-rules.test.yml"
    t.write_text(RULE_TESTS.format(rules=json.dumps(str(RULES))))
    r = subprocess.run([promtool, "test", "rules", str(t)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
