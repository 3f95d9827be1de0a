"""Shared fixtures: where the shared data lives, and a skip when it is absent."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SHARED_DATA = Path(os.environ.get("GRAPHSENTRY_SHARED_DATA", REPO.parent / "shared" / "data"))
# shared test helpers (cli_helpers, kafka_fixtures) import as top-level modules; --import-mode=importlib adds no path
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test when it is absent (a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set GRAPHSENTRY_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: small graphs run several times faster that way on 2 busy cores."""
    from detector.runtime import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny real flow model (random encoder + kNN, 10-minute windows) trained once per session on the bundled
    Zeek sample; treat it as read-only (copy it to change it)."""
    from training.cli import main

    out = tmp_path_factory.mktemp("tiny-model") / "m"
    rc = main(["train", "--data", str(SAMPLES / "stratosphere" / "008-zeek-mixed.conn.log.labeled"), "--out",
               str(out), "--epochs", "1", "--objective", "none", "--window", "10m", "--detector", "knn",
               "--no-progress"])
    assert rc == 0 and (out / "manifest.json").exists()
    return out
