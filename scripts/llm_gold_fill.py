"""Fill the llm answer cache for the gold techniques, in sorted id order; stop it any time, a rerun continues.

Usage: python scripts/llm_gold_fill.py  (server at 127.0.0.1:8765, cache /work/llm/cache; edit below)
Then: python -m knowledge.extract.llm_eval --cached-only ... scores the techniques answered so far."""
import logging, time
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
from knowledge.extract.llm import LLMExtractor
from knowledge.extract import items_from_graph
from knowledge.extract.evaluate import load_gold
from knowledge.graph import build_graph
g, _ = build_graph(None)
gold = load_gold()
items = sorted(items_from_graph(g, only=set(gold)), key=lambda i: i.source_id)
ex = LLMExtractor("http://127.0.0.1:8765", model="qwen2.5-coder-1.5b-instruct-q4_k_m", cache_dir="/work/llm/cache", timeout=900)
for it in items:
    t = time.time()
    ls = ex.extract([it])
    print(it.source_id, round(time.time() - t, 1), [(l.predicate, l.confidence) for l in ls if l.status == "ok"],
          [l.extra for l in ls if l.status != "ok"], flush=True)
