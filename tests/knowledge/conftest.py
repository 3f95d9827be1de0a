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


# The tests import hand-made windows from tests/knowledge/flowkit.py as ``tests.knowledge.flowkit``;
# make the repo root importable also when pytest is started without ``python -m``.
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
