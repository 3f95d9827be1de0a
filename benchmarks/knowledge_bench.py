"""Knowledge features on shared labelled data: which techniques score highest per attack class, and
how much the knowledge block costs in the window pipeline.

    .venv/bin/python benchmarks/knowledge_bench.py [--days 2] [--window 60] [--out reports/knowledge_report.md]
    # with the optional embedding backend measured too:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/knowledge_bench.py   (after pip install 'graphsentry[embedding]')

Part 1 (technique ranking): every labelled capture in ../shared/data/flows (IoT-23, CIC-IDS2017 sample,
Stratosphere) is read with the project readers, cut into 60 s tumbling windows, and featurized with the
bundled artifact. Per attack class (the source's own label string; benign and background kept apart)
we report the techniques with the highest mean score over the class's flows, and the share of flows
whose top technique is in the family a reviewer expects. Labels are only used here to group rows
for the report: they never enter features, rules or thresholds.

Part 2 (throughput): LUFlow days through windows -> GraphBuilder (the pipeline without knowledge)
and windows -> GraphBuilder + KnowledgeFeaturizer (with it); records/s and the ratio. Consecutive
windows go through both in one call each (``build_many`` / ``transform_many``), as the scorer runs
them; ``--per-window`` adds the one-window-per-call figures.

    .venv/bin/python benchmarks/knowledge_bench.py --part throughput --out reports/knowledge_throughput.md

Part 3 (``--part fastpaths``, only on request): ``transform_many`` CPU on 2 LUFlow days grouped as the
scorer groups them, with and without its fast paths (compiled propagation and node max, table-ranked
group ids), alternating, best of ``--repeats``; checks that both give the same bits.

    .venv/bin/python benchmarks/knowledge_bench.py --part fastpaths --out /tmp/knowledge_fastpaths.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest.graph import GraphBuilder  # noqa: E402
from ingest.readers import open_inputs  # noqa: E402
from ingest.windows import Tumbling, window_all  # noqa: E402
from knowledge.features import KnowledgeFeaturizer  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "flows"

# What a reviewer expects per attack family (ATT&CK id prefixes). Used only to print a hit column.
EXPECTED = {
    "scan": ("T1046", "T1595", "T1018"),
    "dos": ("T1498", "T1499"),
    "bruteforce": ("T1110",),
    "c2": ("T1071", "T1571", "T1573", "T1095", "T1102", "T1219", "T1090", "T1105", "T1008", "T1132", "T1001"),
}


def family(attack: str) -> str | None:
    a = attack.lower()
    if "scan" in a:
        return "scan"
    if "ddos" in a or a.startswith("dos") or "dos " in a or "dos_" in a or "heartbleed" in a:
        return "dos"
    if "patator" in a or "brute" in a:
        return "bruteforce"
    if "c&c" in a or a in ("cc", "botnet") or "c&c" in a or "command" in a or "botnet" in a:
        return "c2"
    return None


def labelled_files() -> list[Path]:
    files = sorted((DATA / "iot23").glob("*.csv")) + sorted((DATA / "cicids2017").glob("*.csv"))
    files += sorted(p for p in (DATA / "stratosphere").glob("*") if "conn.log" in p.name)
    return files


def rank_techniques(kf: KnowledgeFeaturizer, window_s: float) -> tuple[dict, dict]:
    """Per (dataset, attack class): mean technique scores and top-technique counts over its flows."""
    sums: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[tuple[str, str], int] = defaultdict(int)
    tops: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(int))
    T = len(kf.tech_ids)
    for path in labelled_files():
        ds = path.parent.name
        reader = open_inputs([str(path)])
        windows, _ = window_all(reader, Tumbling(window_s), lateness=1e9)  # offline: nothing is late
        for w in windows:
            kb = kf.transform(w.table)
            s = kb.edge[:, kb.tech_slice]
            top = kb.top_technique()
            attack = w.table.column("attack").to_pylist()
            label = w.table.column("label").to_pylist()
            names = np.array([a if a else {0: "benign", 1: "malicious (unnamed)", 2: "background"}.get(l, "unknown")
                              for a, l in zip(attack, label)], dtype=object)
            uniq, inv = np.unique(names.astype(str), return_inverse=True)
            top_a = np.array(top, dtype=object)
            for k, cls in enumerate(uniq.tolist()):
                key = (ds, cls)
                m = inv == k
                sums.setdefault(key, np.zeros(T))
                sums[key] += s[m].sum(axis=0)
                counts[key] += int(m.sum())
                t_ids, t_n = np.unique(top_a[m].astype(str), return_counts=True)
                for t, c in zip(t_ids.tolist(), t_n.tolist()):
                    tops[key][None if t == "None" else t] += c
    means = {k: sums[k] / counts[k] for k in sums}
    return {"means": means, "counts": dict(counts)}, tops


BATCH_RECORDS = 65536  # windows per call as in StreamScorer.score_windows: consecutive, up to this many records


def _groups(windows: list, batched: bool) -> list[list]:
    """Consecutive windows per call: up to ``BATCH_RECORDS`` records (batched) or one window each."""
    if not batched:
        return [[w] for w in windows]
    out, cur, n = [], [], 0
    for w in windows:
        if cur and n + w.table.num_rows > BATCH_RECORDS:
            out.append(cur)
            cur, n = [], 0
        cur.append(w)
        n += w.table.num_rows
    return out + ([cur] if cur else [])


def throughput(kf: KnowledgeFeaturizer, days: int, window_s: float, batched: bool = True) -> dict:
    """The window pipeline (read -> windows -> GraphBuilder with a fitted FlowPreprocessor) with and
    without KnowledgeFeaturizer on every window (edge and node blocks).

    ``batched``: consecutive windows (up to 65,536 records) go through ``GraphBuilder.build_many`` and
    ``KnowledgeFeaturizer.transform_many`` together, as ``GraphStream.build_many`` and
    ``StreamScorer.score_windows`` run them; otherwise one window per call (``build`` / ``transform``).
    """
    from ingest.features import FlowPreprocessor

    files = sorted((DATA / "luflow").glob("*.zip"))[:days]
    t0, c0 = time.perf_counter(), time.process_time()
    table = pa.concat_tables([pa.Table.from_batches(list(open_inputs([str(f)]))) for f in files])
    t_read, c_read = time.perf_counter() - t0, time.process_time() - c0
    n = table.num_rows
    t0, c0 = time.perf_counter(), time.process_time()
    windows, _ = window_all(table.to_batches(max_chunksize=65536), Tumbling(window_s), lateness=1e9)
    t_win, c_win = time.perf_counter() - t0, time.process_time() - c0
    pre = FlowPreprocessor().fit(table)  # label-free, offline: not part of the per-window cost
    gb = GraphBuilder(node_mode="ip", preprocessor=pre)
    groups = _groups(windows, batched)
    # Interleaved per call, so both stages see the same load from other processes on a shared box;
    # CPU time of this process (process_time) is reported next to wall time.
    t_graph = t_kg = c_graph = c_kg = c_edge = 0.0
    for ws in groups:
        a, ca = time.perf_counter(), time.process_time()
        gs = gb.build_many(ws)
        b, cb = time.perf_counter(), time.process_time()
        kbs = kf.transform_many([w.table for w in ws], [g.edge_index.numpy() for g in gs], [g.num_nodes for g in gs])
        for kb in kbs:
            kb.edge  # a block from transform_many builds its edge array on first access: count it
        ce = time.process_time()
        for kb in kbs:
            kb.node  # the node blocks are computed on first access: count them
        c, cc = time.perf_counter(), time.process_time()
        t_graph += b - a
        t_kg += c - b
        c_graph += cb - ca
        c_kg += cc - cb
        c_edge += ce - cb
    base = t_read + t_win + t_graph
    full = base + t_kg
    cbase = c_read + c_win + c_graph
    rows = np.array([w.table.num_rows for w in windows])
    return {"records": n, "windows": len(windows), "calls": len(groups), "batched": batched,
            "days": [f.name for f in files],
            "rows_per_window_median": int(np.median(rows)), "read_s": round(t_read, 2), "windows_s": round(t_win, 2),
            "read_cpu_s": round(c_read, 2), "windows_cpu_s": round(c_win, 2),
            "graph_s": round(t_graph, 2), "kg_s": round(t_kg, 2), "graph_cpu_s": round(c_graph, 2),
            "kg_cpu_s": round(c_kg, 2), "kg_edge_cpu_s": round(c_edge, 2),
            "cpu_ratio_edge_only": round(cbase / (cbase + c_edge), 3),
            "cpu_ratio": round(cbase / (cbase + c_kg), 3), "base_s": round(base, 2), "with_kg_s": round(full, 2),
            "base_rps": round(n / base), "with_kg_rps": round(n / full), "kg_only_rps": round(n / max(t_kg, 1e-9)),
            "base_cpu_rps": round(n / cbase), "with_kg_cpu_rps": round(n / (cbase + c_kg)),
            "ratio": round(base / full, 3), "width": kf.width}


def throughput_lines(tp: dict, win: float) -> list[str]:
    how = (f"{tp['calls']} calls of consecutive windows up to {BATCH_RECORDS} records (`build_many` + `transform_many`, "
           "as the scorer runs them)" if tp["batched"] else "one window per call (`build` + `transform`)")
    return [f"## Throughput (LUFlow, {win:.0f} s windows, {'batched' if tp['batched'] else 'one window per call'})", "",
            f"{tp['records']} records ({', '.join(tp['days'])}), {tp['windows']} windows of {win:.0f} s "
            f"(median {tp['rows_per_window_median']} flows per window), {how}; one process, one run on a shared "
            "2-core box; the two per-call stages are timed interleaved.", "",
            "| stage | wall s | CPU s |", "|---|---:|---:|",
            f"| read (LUFlow zip -> canonical Arrow) | {tp['read_s']} | {tp['read_cpu_s']} |",
            f"| event-time windows | {tp['windows_s']} | {tp['windows_cpu_s']} |",
            f"| GraphBuilder (edge features, node features, ids) | {tp['graph_s']} | {tp['graph_cpu_s']} |",
            f"| KnowledgeFeaturizer (edge + node blocks) | {tp['kg_s']} | {tp['kg_cpu_s']} |",
            f"| of which the edge block alone | | {tp['kg_edge_cpu_s']} |", "",
            "| pipeline | records/s (wall) | records per CPU-s |", "|---|---:|---:|",
            f"| read + windows + graphs (no knowledge) | {tp['base_rps']} | {tp['base_cpu_rps']} |",
            f"| read + windows + graphs + knowledge features | {tp['with_kg_rps']} | {tp['with_kg_cpu_rps']} |",
            f"| knowledge features alone | {tp['kg_only_rps']} | |", "",
            f"Throughput with knowledge features = {tp['ratio']:.2f} x the pipeline without them by wall "
            f"time, {tp['cpu_ratio']:.2f} x by CPU time; {tp['cpu_ratio_edge_only']:.2f} x by CPU time when only "
            f"the edge block is used (knowledge block width {tp['width']}; goal >= 0.5).", ""]


def fast_paths(days: list[str] | None = None, window_s: float = 300.0, repeats: int = 9) -> dict:
    """CPU of ``transform_many`` (edge and node blocks) on LUFlow windows grouped as the scorer groups them,
    with the fast paths (compiled propagation and node max, table-ranked groups) and without them
    (``KnowledgeFeaturizer.COMPILED = False``, torch's node max, np.unique groups); the two alternate,
    best of ``repeats``, and must give the same bits."""
    import pyarrow.compute as pc

    import knowledge.predicates.kernels as kp
    from detector.pipeline import window_groups
    from detector.scoring import StreamScorer
    from ingest.features import FlowPreprocessor
    from knowledge.features import stack_edges, stack_nodes

    allfiles = sorted((DATA / "luflow").glob("*.zip"))
    files = [f for f in allfiles if f.name in days] if days else [f for f in allfiles if f.name >= "2020.12.16"][:2]
    table = pa.concat_tables([pa.Table.from_batches(list(open_inputs([str(f)]))) for f in files])
    table = table.take(pc.sort_indices(table, sort_keys=[("ts", "ascending"), ("row", "ascending")]))
    windows, _ = window_all(table.to_batches(max_chunksize=65536), Tumbling(window_s), lateness=0.0)
    gb = GraphBuilder(node_mode="ip", preprocessor=FlowPreprocessor().fit(table))
    groups = []
    for ws in window_groups([w for w in windows if w.table.num_rows], StreamScorer.BATCH_RECORDS):
        gs = gb.build_many(ws)
        groups.append(([w.table for w in ws], [g.edge_index.numpy() for g in gs], [int(g.num_nodes) for g in gs]))

    def setting(fast: bool) -> None:
        KnowledgeFeaturizer.COMPILED = fast
        kp._NODE_KERNEL[:] = [] if fast else [None]
        kp._DENSE_PER_ROW, kp._DENSE_FIXED = (4, 1 << 16) if fast else (0, 0)

    def run(fast: bool) -> tuple[float, list]:
        setting(fast)
        c0 = time.process_time()
        out = []
        for g in groups:
            kbs = kf.transform_many(*g)
            kbs[0].node  # as GraphStream._kb_many: the node blocks are computed in the call
            out.append(kbs)
        return time.process_time() - c0, out

    kf = KnowledgeFeaturizer.default()
    best = {True: float("inf"), False: float("inf")}
    try:
        run(True), run(False)  # compile / warm up
        for i in range(repeats):
            for fast in ((True, False) if i % 2 == 0 else (False, True)):
                c, out = run(fast)
                best[fast] = min(best[fast], c)
                if i == 0:
                    got = [(stack_edges(k), stack_nodes(k), np.concatenate([b.top_technique_array() for b in k]))
                           for k in out]
                    if fast:
                        fast_out = got
                    else:
                        ref_out = got
        same = all(np.array_equal(a[0].view(np.uint32), b[0].view(np.uint32))
                   and np.array_equal(a[1].view(np.uint32), b[1].view(np.uint32)) and (a[2] == b[2]).all()
                   for a, b in zip(fast_out, ref_out))
    finally:
        setting(True)
    return {"records": table.num_rows, "days": [f.name for f in files], "windows": sum(len(g[0]) for g in groups),
            "groups": len(groups), "repeats": repeats, "fast_cpu_ms": round(best[True] * 1e3, 1),
            "reference_cpu_ms": round(best[False] * 1e3, 1), "ratio": round(best[True] / best[False], 3),
            "bit_identical": bool(same)}


def fast_path_lines(fp: dict) -> list[str]:
    return ["## transform_many fast paths (LUFlow, as the scorer groups windows)", "",
            f"{fp['records']} records ({', '.join(fp['days'])}), {fp['windows']} windows of 300 s in {fp['groups']} "
            "groups of up to 16,384 records (`window_groups`, `StreamScorer.BATCH_RECORDS`); CPU of "
            "`transform_many` + node blocks per pass over all groups, the two settings alternating, best of "
            f"{fp['repeats']}. Reference: `KnowledgeFeaturizer.COMPILED = False` (NumPy/scipy propagation), "
            "torch's scatter-amax node max, np.unique group ids (the other changes of this path are not "
            "switchable and are in both).", "",
            "| setting | CPU ms |", "|---|---:|",
            f"| fast paths | {fp['fast_cpu_ms']} |", f"| reference | {fp['reference_cpu_ms']} |", "",
            f"Fast / reference = {fp['ratio']:.2f}; blocks, node blocks and top techniques bit-identical: "
            f"{'yes' if fp['bit_identical'] else 'NO'}.", ""]


def gold_section() -> list[str]:
    """Precision/recall of each available extraction backend (and their vote) on the gold techniques."""
    from knowledge.extract import get_extractor, items_from_graph
    from knowledge.extract.evaluate import load_gold, score
    from knowledge.extract.vote import combine, propagate
    from knowledge.graph import DEFAULT_DATA, build_graph

    if not (DEFAULT_DATA / "enterprise-attack.json").exists():
        return []
    g, _ = build_graph()
    gold = load_gold()
    # gold techniques plus the CAPEC patterns that map to them (so "with graph" includes CAPEC propagation)
    capec = {g.nodes[u]["source_id"] for t in gold if f"attack:{t}" in g
             for u, _, k in g.in_edges(f"attack:{t}", keys=True) if k == "maps_to"}
    items = items_from_graph(g, only=set(gold) | capec)
    res, notes = {}, []
    for b in ("lexicon", "embedding"):
        try:
            t0 = time.perf_counter()
            res[b] = get_extractor(b).extract(items)
            notes.append(f"{b} {time.perf_counter() - t0:.1f} s")
        except ImportError as e:
            notes.append(f"{b} not installed ({e.name})")
    notes.append("llm not run (needs --llm-url to a live server; see `make test-llm`)")
    rows = dict(res)
    if len(res) > 1:
        rows["vote"] = combine(res)
    lines = ["## Extraction quality on the gold set", "",
             f"{len(gold)} hand-written techniques (`knowledge/gold/technique_predicates.yaml`), links with "
             "confidence >= 0.5; 'with graph' adds CAPEC -> technique and sub-technique -> parent propagation. "
             + "; ".join(notes) + ".", "",
             "| backend | precision | recall | F1 | precision (with graph) | recall (with graph) |",
             "|---|---:|---:|---:|---:|---:|"]
    for b, ls in rows.items():
        d, w = score(ls, gold), score(propagate(g, ls), gold)
        lines.append(f"| {b} | {d['precision']:.3f} | {d['recall']:.3f} | {d['f1']:.3f} | {w['precision']:.3f} | {w['recall']:.3f} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=2, help="LUFlow days for the throughput part")
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--out", default=None,
                    help="report path (default reports/knowledge_report.md; reports/knowledge_throughput.md "
                         "with --part throughput, so part 1's report is not overwritten)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-ranking", action="store_true")
    ap.add_argument("--skip-gold", action="store_true")
    ap.add_argument("--part", choices=("all", "ranking", "throughput", "fastpaths"), default="all",
                    help="ranking = part 1 (+ gold set), throughput = part 2 only, fastpaths = transform_many "
                         "with and without its fast paths only (default: all but fastpaths)")
    ap.add_argument("--repeats", type=int, default=9, help="passes per setting for --part fastpaths")
    ap.add_argument("--per-window", action="store_true",
                    help="also measure part 2 with one window per call (the path before batching)")
    args = ap.parse_args(argv)
    if args.part == "fastpaths":
        fp = fast_paths(repeats=args.repeats)
        lines = fast_path_lines(fp)
        out = Path(args.out or REPO / "reports" / "knowledge_fastpaths.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines))
        out.with_suffix(".json").write_text(json.dumps(fp, indent=1))
        print("\n".join(lines))
        return 0 if fp["bit_identical"] else 1
    if args.part == "ranking":
        args.skip_throughput = True
    elif args.part == "throughput":
        args.skip_ranking = args.skip_gold = True
    if args.out is None:
        name = "knowledge_throughput.md" if args.part == "throughput" else "knowledge_report.md"
        args.out = str(REPO / "reports" / name)
    if not DATA.is_dir():
        print(f"shared data not found at {DATA}; nothing to measure", file=sys.stderr)
        return 0
    kf = KnowledgeFeaturizer.default()
    names = {t["id"]: t["name"] for t in kf.techniques}
    t0 = time.perf_counter()
    res, tops = rank_techniques(kf, args.window) if not args.skip_ranking else ({"means": {}, "counts": {}}, {})
    rank_s = time.perf_counter() - t0
    lines = ["# Knowledge features on shared labelled data", "",
             f"Artifact `{kf.hash[:16]}` (bundled, lexicon extractor), {kf.width} columns "
             f"({len(kf.predicates)} predicates, {len(kf.tech_ids)} techniques, {len(kf.tactics)} tactics); "
             f"{args.window:.0f} s tumbling windows. Command: `.venv/bin/python benchmarks/knowledge_bench.py`.", "",
             "Mean technique score over each class's flows (top 5), and the share of the class's flows whose "
             "top technique (score >= 0.35) falls in the expected family "
             "(scan: T1046/T1595/T1018; DoS: T1498/T1499; brute force: T1110; C&C: T1071/T1571/T1573/T1095/T1102/T1219/T1090/T1105...).", "",
             "| data set | class | flows | top techniques (mean score) | top-1 in expected family | expected family in top 5 |",
             "|---|---|---:|---|---:|:---:|"]
    if args.skip_ranking:  # no empty ranking table in a throughput-only report
        lines = lines[:3] + ["", f"Part 2 only (arguments: `{' '.join(argv or sys.argv[1:])}`).", ""]
    summary = {}
    for key in sorted(res["means"], key=lambda k: (k[0], k[1])):
        ds, cls = key
        n = res["counts"][key]
        mean = res["means"][key]
        order = np.argsort(-mean)[: args.top]
        top = ", ".join(f"{kf.tech_ids[j]} {names[kf.tech_ids[j]]} ({mean[j]:.2f})" for j in order)
        fam = family(cls)
        if fam:
            pref = EXPECTED[fam]
            hit1 = sum(c for t, c in tops[key].items() if t and t.startswith(pref)) / n
            hit5 = any(kf.tech_ids[j].startswith(pref) for j in order)
            h1, h5 = f"{hit1:.0%}", "yes" if hit5 else "no"
        else:
            hit1, hit5, h1, h5 = None, None, "–", "–"
        none_share = tops[key].get(None, 0) / n
        summary[f"{ds}/{cls}"] = {"flows": n, "top": [kf.tech_ids[j] for j in order], "top1_expected": hit1,
                                  "expected_in_top5": hit5, "no_technique": round(none_share, 3)}
        lines.append(f"| {ds} | {cls} | {n} | {top} | {h1} | {h5} |")
    if not args.skip_ranking:
        lines += ["", f"(ranking took {rank_s:.1f} s)", ""]
    if not args.skip_throughput:
        for win in (args.window, 5 * args.window):
            for batched in ((True, False) if args.per_window else (True,)):
                tp = throughput(kf, args.days, win, batched)
                summary[f"throughput_{win:.0f}s" + ("" if batched else "_per_window")] = tp
                lines += throughput_lines(tp, win)
    if not args.skip_gold:
        lines += gold_section()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    from training.report_meta import report_meta

    summary.update(report_meta())  # commit, date and cores of the code that measured
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=str))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
