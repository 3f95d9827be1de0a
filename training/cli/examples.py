"""One example per subcommand, shown at the end of its ``--help`` (paths are the bundled samples and
what ``make run`` writes under ``out/demo``, so each runs from a fresh clone after ``make run``)."""
from __future__ import annotations

_LOG = "samples/stratosphere/008-zeek-mixed.conn.log.labeled"
_LATER = "samples/stratosphere/010-zeek-mixed.conn.log.labeled"
_MODEL = "out/demo/model"

EXAMPLES: dict[str, str] = {
    "ingest": f"graphsentry ingest {_LOG} --out out/flows.parquet --dead-letter out/dead-letter.jsonl",
    "windows": f"graphsentry windows {_LOG} --window 60s --lateness 10s --summary-only",
    "kg": "graphsentry kg stats",
    "kg build": "graphsentry kg build --out out/kg            # needs ATT&CK/CAPEC/CWE/D3FEND files (--data)",
    "kg stats": "graphsentry kg stats --json",
    "kg explain": "graphsentry kg explain T1046",
    "score": f"graphsentry score {_LATER} --model {_MODEL} --out out/scores.parquet",
    "serve": f"graphsentry serve {_LATER} --model {_MODEL}\n"
             "graphsentry serve --config deploy/graphsentry.yaml --print-config",
    "replay": f"graphsentry replay {_LATER} --bootstrap 127.0.0.1:9092 --topic graphsentry-flows --speed 10x",
    "train": f"graphsentry train {_LOG} --out out/model --benign-only --epochs 1",
    "calibrate": f"graphsentry calibrate {_LATER} --model {_MODEL} --out out/model-recalibrated",
    "evaluate": f"graphsentry evaluate --train {_LOG} --test {_LATER} --report out/report --epochs 1",
    "fraud": "graphsentry fraud train samples/fraud/fdh-style-sim-300c-60d.parquet --out out/fraud-model",
    "fraud train": "graphsentry fraud train samples/fraud/fdh-style-sim-300c-60d.parquet --out out/fraud-model",
    "fraud score": "graphsentry fraud score samples/fraud/fdh-style-sim-300c-60d.parquet --model out/fraud-model "
                   "--out out/fraud-scores.parquet",
    "fraud evaluate": "graphsentry fraud evaluate samples/fraud/fdh-style-sim-300c-60d.parquet "
                      "--report out/fraud-report --folds 1",
    "demo": "graphsentry demo --out out/demo",
    "archive": "graphsentry archive --from-kafka 127.0.0.1:9092 --topic graphsentry-flows --out out/archive "
               "--max-bytes 20GB --max-age 30d\n"
               f"graphsentry archive --from-files {_LOG} --out out/archive",
    "archive compact": "graphsentry archive compact --archive out/archive --dry-run",
    "ui": "graphsentry ui --alerts out/demo/alerts.db          # then browse http://127.0.0.1:8080/",
    "ui export-verdicts": "graphsentry ui export-verdicts --alerts out/demo/alerts.db --out out/verdicts.csv",
    "models": "graphsentry models list --registry out/registry",
    "models list": "graphsentry models list --registry out/registry --json",
    "models show": "graphsentry models show champion --registry out/registry --verify",
    "models register": f"graphsentry models register {_MODEL} --registry out/registry --promote --reason 'first model'",
    "models promote": "graphsentry models promote v0002 --registry out/registry --reason 'gate passed'",
    "models rollback": "graphsentry models rollback --registry out/registry --reason 'too many alerts'",
    "models diff": "graphsentry models diff previous champion --registry out/registry",
    "models verify": "graphsentry models verify champion --registry out/registry",
    "retrain": "graphsentry retrain --archive out/archive --registry out/registry --since 7d "
               "--config retrain.yaml --pushgateway 127.0.0.1:9091",
}
