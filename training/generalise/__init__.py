"""Development benchmark "leave one network out" (issue 17, section 1).

``python -m training.eval_suites generalise --out reports/generalise [--splits PATTERNS] [--max-train N]
[--max-test N] [--epochs E] [--seed S]``

Every split holds one *network* out of training entirely and trains ONE generic model on the rest:

* ``iot23/<capture>`` and ``stratosphere/<capture>``: one Zeek capture (one device / host) is the test set;
  the model trains on every other IoT-23 and Stratosphere capture together (one generic Zeek model).
  Cross-capture: captures are different devices and dates, so this is not a forecast in time.
* ``luflow/later-days``: LUFlow days before the first gap of at least 3 days without data train, the
  days after it test (only 2020-12-16 of those holds labelled attacks in the shared copy); test records less than 3 days after the last training record are dropped, so the
  gap holds on the records' own timestamps.
* ``cicids2017/<family>``: benign flows split in time (earliest 70 % train, latest 30 % test); the
  training table also holds the attack flows of every *other* family up to the cut, the test table the
  held-out family. Training is benign-only (malicious-labelled records are dropped before anything is
  fitted), so leaving a family out only changes what the validation-based choices (objective, detector
  input, detector) see: the attacks of the held-back training period. Families whose flows all lie
  after the cut change nothing at all (the same model; trained once and reused in one run).

Methods, all fitted on the same benign training flows of the split:

* ``ours``: the default ``graphsentry train --benign-only`` pipeline (``train_bundle`` with the
  default TrainConfig apart from epochs/seed), its calibrated threshold;
* ``iforest_raw``, ``ecod``, ``hbos``: IsolationForest, PyOD ECOD and PyOD HBOS on the raw per-flow
  feature matrix (the preprocessor ``iforest_raw`` of :mod:`training.evaluate` uses), thresholded at the
  ``1 - target_fpr`` quantile of their own training scores.

No threshold and no choice sees a test label. Big inputs are capped with an even stride over the
time-sorted records (never random rows across time); the caps are stored in the report.

Results: one JSON per split under ``OUT/splits/`` (so partial and parallel runs add up), and
``OUT/report.json`` / ``OUT/report.md`` rendered from all of them (:func:`render`).

One idea per module: :mod:`.splits` (inputs and splits), :mod:`.methods` (ours and the baselines on a
split), :mod:`.report` (verdict and rendering), :mod:`.provenance` (commit, versions), :mod:`.run` (the
run and its command line).
"""
from __future__ import annotations

from training.generalise.methods import ECOD_CHUNK, GRACE_FRAC, METHODS, evaluate
from training.generalise.provenance import _dirty, _versions, git_head
from training.generalise.report import (
    EPISODE_GOAL,
    FPR_GOAL,
    GROUP_ORDER,
    load_splits,
    markdown,
    render,
    verdict,
    worst,
)
from training.generalise.run import add_arguments, main, run, run_args
from training.generalise.splits import (
    CIC_TRAIN_FRAC,
    DATA,
    GAP_DAYS,
    Split,
    SplitSpec,
    _concat,
    build,
    cic_families,
    ips,
    local_host,
    luflow_cut,
    luflow_days,
    read_file,
    select,
    split_specs,
    stride,
    time_sorted,
    ts_seconds,
    zeek_captures,
)

__all__ = ["CIC_TRAIN_FRAC", "DATA", "ECOD_CHUNK", "EPISODE_GOAL", "FPR_GOAL", "GAP_DAYS", "GRACE_FRAC", "GROUP_ORDER",
           "METHODS", "Split", "SplitSpec", "_concat", "_dirty", "_versions", "add_arguments", "build", "cic_families",
           "evaluate", "git_head", "ips", "load_splits", "local_host", "luflow_cut", "luflow_days", "main", "markdown",
           "read_file", "render", "run", "run_args", "select", "split_specs", "stride", "time_sorted", "ts_seconds",
           "verdict", "worst", "zeek_captures"]
