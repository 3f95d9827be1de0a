"""The README's one results table: a row per area, each figure from the report that measured it."""
from __future__ import annotations

from scripts.render import bench, fraud, knowledge, model
from scripts.render.common import Reports, f3, table, thousands


def render(reports: Reports) -> list[str]:
    gen = reports.get(model.REPORT)
    st = model.stats(gen)
    score = reports.get(bench.SCORE)["runs"][0]
    serve = reports.get(bench.SERVE)
    tr = serve["transport"]
    train = reports.get(bench.TRAIN)["runs"]
    kg = reports.get(knowledge.THROUGHPUT)["throughput_60s"]
    fr = reports.get(fraud.REPORT)["summary"]
    base = fraud.best_baseline(fr)
    two = train.get("2proc_1thread", {})
    one = train.get("1proc_1thread", {})
    rows = [
        ["detection, leave one network out", f"best AUPRC against IsolationForest, ECOD and HBOS on {st['ours_auprc_wins']} of "
         f"{st['with_attacks']} held-out networks; >= 90% of attack episodes at benign FPR <= 1% on "
         f"{st['ours_goal']} of {st['with_episodes']}",
         "[model](docs/model.md)"],
        ["`graphsentry score`, end to end", f"{thousands(score['score_records_per_s'])} records/s "
         f"({score['detector']}, {thousands(score['records'])} LUFlow records)", "[benchmarks](docs/benchmarks.md)"],
        ["daemon through Kafka, JSON per record", ", ".join(
            f"{thousands(tr[b]['json']['records_per_s'])} records/s ({b})" for b in serve["backends"])
         + f"; with the real model {thousands(serve['real_model'][serve['backends'][-1]]['records_per_s'])} "
           f"({serve['backends'][-1]})",
         "[benchmarks](docs/benchmarks.md)"],
        ["event to alert, p99", f"{serve['latency']['event_to_alert_p99_s']:.1f} s with "
         f"{serve['latency']['window_s']:.0f} s windows", "[daemon](docs/daemon.md)"],
        ["knowledge features, 60 s windows", f"{thousands(kg['with_kg_rps'])} records/s with them, "
         f"{thousands(kg['base_rps'])} without", "[knowledge](docs/knowledge.md)"],
        ["pretraining epoch, bundled samples", f"{one.get('epoch_seconds_median', 0):.1f} s (1 process), "
         f"{two.get('epoch_seconds_median', 0):.1f} s (2 ranks)", "[benchmarks](docs/benchmarks.md)"],
        ["fraud, average precision", f"{f3(fr['ours']['average_precision']['mean'])} (ours) vs "
         f"{f3(fr[base]['average_precision']['mean'])} (best other model, `{base}`)", "[fraud](docs/fraud.md)"],
    ]
    return table(["area", "measured", "details"], rows)
