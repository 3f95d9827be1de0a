"""Measure the ``llm`` backend against a real model on the gold set, alone and in the vote.

``python -m knowledge.extract.llm_eval --llm-url http://127.0.0.1:8765 --cache-dir DIR [--server-log LOG]``

Scores come from :func:`knowledge.extract.evaluate.score` (the same micro precision/recall as
``python -m knowledge.extract.evaluate``). The llm reads the gold techniques only (one call each, cached:
a rerun makes no call); lexicon (and embedding, when importable) read the gold techniques plus the CAPEC
patterns that map to them, as in ``evaluate``, so their "with graph" figures match it. In the vote the
CAPEC patterns count as not answered by the llm (like a failed item), so they are not voted down.

Writes ``OUT.json`` and ``OUT.md`` (default ``reports/knowledge_llm``): per-backend precision/recall, every
llm answer against the gold links, seconds per technique and tokens/s (from the answers' ``usage`` and, with
``--server-log``, from llama.cpp's own timing lines).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from knowledge.extract import Link, get_extractor, items_from_graph
from knowledge.extract.evaluate import GOLD, load_gold, score
from knowledge.extract.llm import PROMPT_VERSION, LLMExtractor
from knowledge.extract.vote import combine, propagate
from knowledge.graph import build_graph

_PERF = re.compile(r"(prompt eval|\beval) time =\s*([\d.]+) ms /\s*(\d+) (?:tokens|runs)")


def server_speed(log_path: str | Path) -> dict:
    """Tokens/s from llama.cpp's ``llama_perf_context_print`` lines (prompt eval and generation): totals over
    the log, and the median over requests (robust to a few odd requests in the same log)."""
    per: dict[str, list[tuple[float, int]]] = {"prompt eval": [], "eval": []}
    for line in Path(log_path).read_text(errors="replace").splitlines():
        m = _PERF.search(line)
        if m and int(m.group(3)) > 1:  # a fully cached prompt logs "0 ms / 1 tokens"
            per["prompt eval" if m.group(1) == "prompt eval" else "eval"].append((float(m.group(2)), int(m.group(3))))
    out = {}
    for key, name in (("prompt eval", "prompt"), ("eval", "generation")):
        ms, n = sum(x for x, _ in per[key]), sum(k for _, k in per[key])
        out[f"{name}_requests"] = len(per[key])
        out[f"{name}_tokens"] = n
        out[f"{name}_tokens_per_s"] = round(n / (ms / 1000), 2) if ms else None
        rates = [k / (x / 1000) for x, k in per[key] if x]
        out[f"{name}_tokens_per_s_median"] = round(statistics.median(rates), 2) if rates else None
    return out


def _per_technique(links: list[Link], gold: dict[str, set[str]], items, cache: LLMExtractor, threshold: float):
    by: dict[str, list[Link]] = {}
    for l in links:
        by.setdefault(l.subject, []).append(l)
    rows = []
    for it in items:
        ls = by.get(it.id, [])
        rec_path = cache._cache_path(cache.cache_key(it))
        rec = json.loads(rec_path.read_text()) if rec_path.exists() else {}
        ok = [l for l in ls if l.status == "ok"]
        picked = {l.predicate for l in ok if l.confidence >= threshold}
        g = gold.get(it.source_id, set())
        text = (it.text + "\n" + it.detection).lower()
        rows.append({
            "technique": it.source_id, "name": it.name,
            "status": "failed" if any(l.status == "failed" for l in ls) else "ok",
            "reason": next((l.extra.get("reason", "") for l in ls if l.status == "failed"), ""),
            "answer": [{"predicate": l.predicate, "confidence": l.confidence, "evidence": l.evidence,
                        "evidence_in_text": bool(l.evidence.strip()) and l.evidence.strip().lower() in text}
                       for l in ok],
            "gold": sorted(g), "tp": sorted(picked & g), "fp": sorted(picked - g), "fn": sorted(g - picked),
            "seconds": rec.get("seconds"), "attempts": rec.get("attempts"), "usage": rec.get("usage"),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm-url", default="http://127.0.0.1:8765")
    ap.add_argument("--llm-model", default="local")
    ap.add_argument("--cache-dir", required=True, help="llm answer cache (a rerun with the same inputs is call-free)")
    ap.add_argument("--backends", default="lexicon,llm", help="lexicon,llm[,embedding]")
    ap.add_argument("--server-log", default=None, help="llama.cpp server log, for its own tokens/s")
    ap.add_argument("--limit", type=int, default=0, help="only the first N gold techniques (a pilot)")
    ap.add_argument("--cached-only", action="store_true",
                    help="score only the gold techniques the llm cache already answers (every backend on that subset)")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="reports/knowledge_llm")
    ap.add_argument("--command", default="", help="the command line, recorded in the report")
    args = ap.parse_args(argv)

    g, _ = build_graph(args.data)
    gold = load_gold()
    tech_ids = sorted(gold)
    if args.limit:
        tech_ids = tech_ids[:args.limit]
        gold = {t: gold[t] for t in tech_ids}
    if args.cached_only:
        probe = LLMExtractor(args.llm_url, model=args.llm_model, cache_dir=args.cache_dir)
        have = {it.source_id for it in items_from_graph(g, only=set(gold))
                if probe._cache_path(probe.cache_key(it)).exists()}
        gold = {t: v for t, v in gold.items() if t in have}
    capec = {g.nodes[u]["source_id"] for t in gold if f"attack:{t}" in g
             for u, _, k in g.in_edges(f"attack:{t}", keys=True) if k == "maps_to"}
    tech_items = items_from_graph(g, only=set(gold))
    all_items = items_from_graph(g, only=set(gold) | capec)
    capec_subjects = {it.id for it in all_items} - {it.id for it in tech_items}

    res: dict[str, list[Link]] = {}
    wall: dict[str, float] = {}
    llm = None
    for b in args.backends.split(","):
        t0 = time.monotonic()
        if b == "llm":
            llm = LLMExtractor(args.llm_url, model=args.llm_model, cache_dir=args.cache_dir, timeout=300)
            res[b] = llm.extract(tech_items)
        else:
            res[b] = get_extractor(b).extract(all_items)
        wall[b] = round(time.monotonic() - t0, 1)

    out: dict = {"backends": {}, "gold": {"path": str(GOLD.relative_to(GOLD.parents[2])), "techniques": len(gold),
                                          "techniques_in_gold_file": len(load_gold()), "subset": sorted(gold),
                                          "links": sum(len(v) for v in gold.values()),
                                          "sha256": hashlib.sha256(GOLD.read_bytes()).hexdigest()},
                 "threshold": args.threshold, "command": args.command, "wall_seconds": wall}
    for b, ls in res.items():
        out["backends"][b] = {"direct": score(ls, gold, args.threshold),
                              "with_graph": score(propagate(g, ls), gold, args.threshold)}
    failed = {b: {l.subject for l in ls if l.status == "failed"} for b, ls in res.items()}
    if "llm" in res:
        failed["llm"] |= capec_subjects
    if len(res) > 1:
        names = list(res)
        pairs = [[a, b] for i, a in enumerate(names) for b in names[i + 1:]] if len(names) > 2 else []
        for combo in [names] + pairs:
            v = combine({b: res[b] for b in combo}, failed={b: failed[b] for b in combo})
            out["backends"]["vote(" + "+".join(combo) + ")"] = {
                "direct": score(v, gold, args.threshold), "with_graph": score(propagate(g, v), gold, args.threshold)}

    if llm is not None:
        rows = _per_technique(res["llm"], gold, tech_items, llm, args.threshold)
        secs = [r["seconds"] for r in rows if r["seconds"] is not None]
        comp = [r["usage"]["completion_tokens"] for r in rows if r["usage"] and r["usage"].get("completion_tokens")]
        prompt = [r["usage"]["prompt_tokens"] for r in rows if r["usage"] and r["usage"].get("prompt_tokens")]
        picks = Counter(a["predicate"] for r in rows for a in r["answer"])
        gold_count = Counter(p for t in gold.values() for p in t)
        first5 = llm.names[:5]
        n_picks = sum(picks.values())
        answers = [a for r in rows for a in r["answer"]]
        out["llm"] = {
            "model": args.llm_model, "url": args.llm_url, "prompt_version": PROMPT_VERSION,
            "response_format_used": llm._format if llm.stats["calls"] else "(no call this run: all answers cached)",
            "stats_this_run": llm.stats,
            "answered": sum(r["status"] == "ok" for r in rows), "failed": sum(r["status"] == "failed" for r in rows),
            "empty_answers": sum(r["status"] == "ok" and not r["answer"] for r in rows),
            "seconds_per_technique": {"n": len(secs), "median": round(statistics.median(secs), 2) if secs else None,
                                      "mean": round(statistics.mean(secs), 2) if secs else None,
                                      "min": min(secs, default=None), "max": max(secs, default=None)},
            "completion_tokens_median": statistics.median(comp) if comp else None,
            "prompt_tokens_median": statistics.median(prompt) if prompt else None,
            "completion_tokens_per_wall_s": round(sum(comp) / sum(secs), 2) if comp and secs else None,
            "picks": dict(picks.most_common()),
            "first5_alphabetical": first5,
            "share_of_picks_in_first5": round(sum(picks[p] for p in first5) / n_picks, 3) if n_picks else None,
            "share_of_gold_in_first5": round(sum(gold_count[p] for p in first5) / max(1, sum(gold_count.values())), 3),
            "evidence_quoted_from_text": round(sum(a["evidence_in_text"] for a in answers) / len(answers), 3)
            if answers else None,
            "per_technique": rows,
        }
        if args.server_log and Path(args.server_log).exists():
            out["llm"]["server_timings"] = server_speed(args.server_log)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    Path(args.out + ".md").write_text(render(out))
    print(json.dumps({b: v["direct"] for b, v in out["backends"].items()}, indent=1))
    return 0


def render(out: dict) -> str:
    """Markdown summary of :func:`main`'s JSON (the figures only; the discussion lives in the README)."""
    L = ["# LLM extraction backend on a real local model", "",
         f"Generated by `python -m knowledge.extract.llm_eval` (command below). Gold: `{out['gold']['path']}`, "
         f"{out['gold']['techniques']} of its {out['gold']['techniques_in_gold_file']} techniques, {out['gold']['links']} links (sha256 {out['gold']['sha256'][:12]}). "
         f"Links count at confidence >= {out['threshold']}.", "",
         "| backend | precision | recall | F1 | tp | fp | fn | with graph propagation P / R |",
         "|---|---:|---:|---:|---:|---:|---:|---|"]
    for b, v in out["backends"].items():
        d, w = v["direct"], v["with_graph"]
        L.append(f"| {b} | {d['precision']:.3f} | {d['recall']:.3f} | {d['f1']:.3f} | {d['tp']} | {d['fp']} | {d['fn']} "
                 f"| {w['precision']:.3f} / {w['recall']:.3f} |")
    L.append("")
    m = out.get("llm")
    if m:
        s = m["seconds_per_technique"]
        L += [f"Model `{m['model']}` at {m['url']}, prompt version {m['prompt_version']}, response_format "
              f"`{m['response_format_used']}`. Answered {m['answered']}, failed {m['failed']}, empty answers "
              f"{m['empty_answers']}.", "",
              f"Seconds per technique (one call, measured by the client when the answer was made): median "
              f"{s['median']}, mean {s['mean']}, min {s['min']}, max {s['max']} (n={s['n']}). Median prompt tokens "
              f"{m['prompt_tokens_median']} (system prompt included), completion tokens {m['completion_tokens_median']}; "
              f"completion tokens per wall second, prompt evaluation included: {m['completion_tokens_per_wall_s']}."]
        if m.get("server_timings"):
            t = m["server_timings"]
            L.append(f"llama.cpp's own timings (server log, {t['generation_requests']} requests): prompt evaluation "
                     f"{t['prompt_tokens_per_s']} tok/s overall, median {t['prompt_tokens_per_s_median']} per request "
                     f"({t['prompt_tokens']} tokens evaluated: the shared system prompt is cached between calls); "
                     f"generation {t['generation_tokens_per_s']} tok/s overall, median "
                     f"{t['generation_tokens_per_s_median']} ({t['generation_tokens']} tokens).")
        pct = lambda x: "–" if x is None else f"{x:.0%}"  # noqa: E731
        L += ["", f"Bias: {pct(m['share_of_picks_in_first5'])} of the model's picks are among the first five "
                  f"predicates of the alphabetical list in the prompt ({', '.join(m['first5_alphabetical'])}), "
                  f"against {pct(m['share_of_gold_in_first5'])} of the gold links. "
                  f"Evidence quoted verbatim from the technique text: {pct(m['evidence_quoted_from_text'])} of picks.",
              "", "Most frequent picks: " + ", ".join(f"{p} {n}" for p, n in list(m["picks"].items())[:12]) + ".",
              "", "## Every answer", "",
              "| technique | s | right (tp) | wrong (fp) | missed (fn) |", "|---|---:|---|---|---|"]
        for r in m["per_technique"]:
            sec = f"{r['seconds']:.1f}" if r["seconds"] is not None else "–"
            fp = ", ".join(r["fp"]) if r["status"] == "ok" else f"FAILED: {r['reason']}"
            L.append(f"| {r['technique']} {r['name']} | {sec} | {', '.join(r['tp'])} | {fp} | {', '.join(r['fn'])} |")
        L += ["", "## Example answers (predicate, confidence, evidence)", ""]
        good = sorted((r for r in m["per_technique"] if r["tp"]), key=lambda r: -len(r["tp"]) + len(r["fp"]))[:3]
        bad = sorted((r for r in m["per_technique"] if r["fp"]), key=lambda r: len(r["tp"]) - len(r["fp"]))[:3]
        for title, rs in (("Mostly right", good), ("Mostly wrong", bad)):
            for r in rs:
                L.append(f"* {title}: **{r['technique']} {r['name']}** (gold: {', '.join(r['gold']) or 'none'})")
                for a in r["answer"]:
                    L.append(f"  * `{a['predicate']}` {a['confidence']}: \"{a['evidence']}\"")
    L += ["", "## Command", "", "```", out.get("command") or "(not recorded)", "```", ""]
    return "\n".join(L)


if __name__ == "__main__":
    raise SystemExit(main())
