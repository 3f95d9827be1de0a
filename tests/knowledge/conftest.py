"""Session fixtures: the knowledge graph built once from ../shared/data/knowledge."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def kdata(shared_data):
    d = shared_data / "knowledge"
    if not (d / "enterprise-attack.json").exists():
        pytest.skip(f"no ATT&CK bundle in {d}")
    return d


@pytest.fixture(scope="session")
def kgraph(kdata):
    from knowledge.graph import build_graph

    return build_graph(kdata)
