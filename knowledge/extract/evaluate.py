"""Precision/recall of extracted links against the hand-written gold set.

``python -m knowledge.extract.evaluate`` scores backends run here (``--backends``) and links of built
artifacts (``--links DIR``, e.g. one made with ``graphsentry kg build --extractor llm``) against the
current gold set and its frozen version 1; ``--report FILE.md`` writes that table, with the revision
notes (``knowledge/gold/REVISIONS.md``), into a marked section of the report (replaced on each run)
and under ``"extraction"`` in the report's JSON twin.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from knowledge.extract import Link

GOLD = Path(__file__).resolve().parents[1] / "gold" / "technique_predicates.yaml"
GOLD_V1 = GOLD.with_name("technique_predicates.v1.yaml")  # frozen: before the session-2 revision
REVISIONS = GOLD.with_name("REVISIONS.md")
BEGIN, END = "<!-- extraction-revision: begin -->", "<!-- extraction-revision: end -->"


def load_gold(path: str | Path = GOLD) -> dict[str, set[str]]:
    """Technique id (e.g. "T1046") -> set of predicate names."""
    data = yaml.safe_load(Path(path).read_text())
    return {str(t): set(ps or []) for t, ps in data["techniques"].items()}


def score(links: list[Link], gold: dict[str, set[str]], threshold: float = 0.5) -> dict:
    """Micro precision/recall/F1 over gold techniques for links with confidence >= threshold."""
    pred: dict[str, set[str]] = {t: set() for t in gold}
    for l in links:
        tid = l.subject.split(":", 1)[1]
        if tid in gold and l.status == "ok" and l.confidence >= threshold:
            pred[tid].add(l.predicate)
    tp = sum(len(pred[t] & gold[t]) for t in gold)
    fp = sum(len(pred[t] - gold[t]) for t in gold)
    fn = sum(len(gold[t] - pred[t]) for t in gold)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f, 3), "tp": tp, "fp": fp, "fn": fn,
            "techniques": len(gold), "threshold": threshold}


def links_from_artifact(path: str | Path) -> tuple[str, list[Link]]:
    """(label, links) of a built artifact directory (its links.parquet, graph propagation included)."""
    import json

    from knowledge.artifact import read_links

    p = Path(path)
    man = json.loads((p / "manifest.json").read_text()) if (p / "manifest.json").exists() else {}
    rows = read_links(p).to_pylist()
    links = [Link(r["subject"], r["predicate"], r["confidence"], r["evidence"], r["backend"], status=r["status"])
             for r in rows]
    return f"{man.get('extractor', '?')} artifact {man.get('hash', '')[:12]}", links


def report_section(results: dict[str, dict], notes: list[str], command: str = "") -> list[str]:
    """Markdown lines: the revision notes and precision/recall per row and gold version."""
    lines = [BEGIN, "## Extraction: revisions and gold-set scores", ""]
    if REVISIONS.exists():
        lines += [REVISIONS.read_text().strip(), ""]
    lines += ["Precision / recall of links with confidence >= 0.5 on the gold techniques; 'direct' = the "
              "backend's own links, 'with graph' = plus CAPEC -> technique and sub-technique -> parent "
              "propagation (what the artifact holds). v1 = the gold set before the session-2 revision. "
              f"Command: `{command or '.venv/bin/python -m knowledge.extract.evaluate --report reports/knowledge_report.md'}`"
              + ("; " + "; ".join(notes) if notes else "") + ".", "",
              "| links | gold | techniques | precision | recall | F1 | precision (with graph) | recall (with graph) |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, by_gold in results.items():
        for gv, r in by_gold.items():
            d, w = r.get("direct"), r["with_graph"]
            dd = f"{d['precision']:.3f} | {d['recall']:.3f} | {d['f1']:.3f}" if d else "– | – | –"
            lines.append(f"| {name} | {gv} | {w['techniques']} | {dd} | {w['precision']:.3f} | {w['recall']:.3f} |")
    return lines + ["", END]


def write_report(md: str | Path, results: dict, notes: list[str], command: str = "") -> None:
    """Replace (or append) the marked extraction section of ``md`` and its JSON twin's "extraction" key."""
    import json

    md = Path(md)
    text = md.read_text() if md.exists() else ""
    section = "\n".join(report_section(results, notes, command))
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    js = md.with_suffix(".json")
    data = json.loads(js.read_text()) if js.exists() else {}
    data["extraction"] = results
    js.write_text(json.dumps(data, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    """Precision/recall per backend (and their vote) on the gold techniques:
    ``python -m knowledge.extract.evaluate --backends lexicon,embedding [--llm-url URL]``."""
    import argparse
    import json

    from knowledge.extract import get_extractor, items_from_graph
    from knowledge.extract.vote import combine, propagate
    from knowledge.graph import build_graph

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--backends", default="lexicon", help="comma-separated backends to run here ('' for none)")
    ap.add_argument("--links", action="append", default=[], metavar="DIR",
                    help="also score the links of a built artifact (repeatable), e.g. one built with --extractor llm")
    ap.add_argument("--data", default=None)
    ap.add_argument("--llm-url", default=None)
    ap.add_argument("--llm-model", default="local")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--report", default=None, help="markdown report to write the section into")
    args = ap.parse_args(argv)
    g, _ = build_graph(args.data)
    golds = {"v2 (current)": load_gold()}
    if GOLD_V1.exists():
        golds["v1"] = load_gold(GOLD_V1)
    every = set().union(*golds.values())
    # gold techniques plus the CAPEC patterns that map to them (so "with graph" includes CAPEC propagation)
    capec = {g.nodes[u]["source_id"] for t in every if f"attack:{t}" in g
             for u, _, k in g.in_edges(f"attack:{t}", keys=True) if k == "maps_to"}
    items = items_from_graph(g, only=every | capec)
    res, notes = {}, []
    for b in filter(None, args.backends.split(",")):
        kw = dict(url=args.llm_url, model=args.llm_model) if b == "llm" else {}
        try:
            res[b] = get_extractor(b, **kw).extract(items)
        except ImportError as e:
            notes.append(f"{b} not installed ({e.name})")
    if "llm" not in res:
        notes.append("llm: score a built llm artifact with `--links DIR`")

    def both(ls: list[Link], direct: bool = True) -> dict:
        return {gv: {"direct": score(ls, gold, args.threshold) if direct else None,
                     "with_graph": score(propagate(g, ls) if direct else ls, gold, args.threshold)}
                for gv, gold in golds.items()}

    out = {b: both(ls) for b, ls in res.items()}
    if len(res) > 1:
        failed = {b: {l.subject for l in ls if l.status == "failed"} for b, ls in res.items()}
        out["vote"] = both(combine(res, failed=failed))
    for d in args.links:
        label, ls = links_from_artifact(d)
        out[label] = both(ls, direct=False)
    print(json.dumps(out, indent=1))
    if args.report:
        import shlex
        import sys

        cmd = " ".join(["python -m knowledge.extract.evaluate"] + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])
        write_report(args.report, out, notes, cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
