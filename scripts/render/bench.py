"""Blocks of the benchmarks page: scoring, the daemon through Kafka, distributed pretraining."""
from __future__ import annotations

from scripts.render.common import Reports, table, thousands

SCORE = "reports/score_bench.json"
SERVE = "reports/serve_bench.json"
SERVE_CONFLUENT = "reports/serve_bench_confluent.json"
TRAIN = "reports/train_bench.json"
DECODE = "reports/json_decode_bench.json"


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


def _serve_row(backend: str, rep: dict) -> list[object]:
    a, j, lat = rep["daemon_arrow"], rep["daemon_json"], rep["latency"]
    return [backend, thousands(a["records_per_s"]), thousands(j["records_per_s"]),
            f"{j['ratio_to_raw_consume']:.2f}", f"{lat['event_to_alert_p99_s']:.1f} (window {lat['window_s']:.0f} s)",
            f"{rep['peak_rss_mb']:.0f}"]


def render_serve(reports: Reports) -> list[str]:
    rows = [_serve_row("kafka-python", reports.get(SERVE)), _serve_row("confluent-kafka", reports.get(SERVE_CONFLUENT))]
    return table(["Kafka client", "batched Arrow records/s", "JSON per record records/s",
                  "JSON / raw consume rate", "event-to-alert p99 s", "peak RSS MB"], rows)


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
