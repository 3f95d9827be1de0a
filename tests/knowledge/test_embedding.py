"""Embedding backend (optional extra ``graphsentry[embedding]``); skipped when it is not installed."""
from __future__ import annotations

import pytest

from knowledge.extract import TextItem

pytest.importorskip("sentence_transformers", reason="embedding extra not installed (pip install 'graphsentry[embedding]')")


@pytest.mark.slow
def test_embedding_links_flood_text_to_flood():
    from knowledge.extract.embedding import EmbeddingExtractor

    ex = EmbeddingExtractor()
    item = TextItem("attack:TX", "TX", "Direct Network Flood",
                    "Adversaries may flood the victim with a high rate of small packets to exhaust its bandwidth.", "")
    links = {l.predicate: l for l in ex.extract([item])}
    assert "flood" in links and links["flood"].confidence > 0
    assert max(links, key=lambda p: links[p].confidence) in ("flood", "high_packet_rate", "small_packets", "icmp_flood", "udp_volume")
