#!/usr/bin/env bash
# Run `fraud evaluate` as 15 parallel processes (3 folds x {ours+baselines, no_graph, no_contrastive,
# ours_rf_head, rf_edge21})
# and merge them into OUT/report.{json,md}. Same protocol and numbers as one sequential
# `graphsentry fraud evaluate --folds 3`; only faster on a machine with >= 16 cores.
# Usage: training/fraud/parallel_eval.sh DATA.parquet OUT_DIR [PYTHON]
set -u
DATA=$1; OUT=$2; PY=${3:-python3}
mkdir -p "$OUT"; TMP=$(mktemp -d)
for f in 0 1 2; do
  $PY -c "from training.fraud.api import evaluate; evaluate(['$DATA'], '$TMP/a$f', only_folds=($f,), ablations=(), rf_jobs=2)" > "$TMP/log_a$f.txt" 2>&1 &
  $PY -c "from training.fraud.api import evaluate; evaluate(['$DATA'], '$TMP/b$f', only_folds=($f,), include_ours=False, ablations=('no_graph',), baselines=())" > "$TMP/log_b$f.txt" 2>&1 &
  $PY -c "from training.fraud.api import evaluate; evaluate(['$DATA'], '$TMP/c$f', only_folds=($f,), include_ours=False, ablations=('no_contrastive',), baselines=())" > "$TMP/log_c$f.txt" 2>&1 &
  $PY -c "from training.fraud.api import evaluate; evaluate(['$DATA'], '$TMP/d$f', only_folds=($f,), include_ours=False, ablations=(), baselines=(), extras=('ours_rf_head',), rf_jobs=2)" > "$TMP/log_d$f.txt" 2>&1 &
  $PY -c "from training.fraud.api import evaluate; evaluate(['$DATA'], '$TMP/e$f', only_folds=($f,), include_ours=False, ablations=(), baselines=(), extras=('rf_edge21',), rf_jobs=1)" > "$TMP/log_e$f.txt" 2>&1 &
done
wait
cat "$TMP"/log_*.txt > "$OUT/logs.txt"
$PY -c "
import glob
from training.fraud.api import merge_reports
merge_reports(sorted(glob.glob('$TMP/*/report.json')), '$OUT')
" && cat "$OUT/report.md"
