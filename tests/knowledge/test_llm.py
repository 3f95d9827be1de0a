"""The llm backend against a small OpenAI-compatible server on 127.0.0.1 that replays recorded answers.

``test_llm_real_*`` runs only with GRAPHSENTRY_LLM_TESTS=1 (``make test-llm``) against a real local server:
GRAPHSENTRY_LLM_URL when set (it must answer), else one started from GRAPHSENTRY_LLM_SERVER_CMD on a free 127.0.0.1 port
(``{port}`` in the command) and stopped at the end, e.g. ``scripts/llm_server.sh serve {port}``.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from knowledge.extract import TextItem
from knowledge.extract.llm import LLMExtractor, parse_answer, AnswerError
from knowledge.predicates import PREDICATES

ANSWERS = json.loads((Path(__file__).parent / "data" / "llm_replay.json").read_text())


class _Replay(BaseHTTPRequestHandler):
    def log_message(self, *a):  # keep pytest output clean
        pass

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append((self.path, body))
        tid = re.match(r"Technique (\S+):", body["messages"][1]["content"]).group(1)
        srv.calls[tid] = srv.calls.get(tid, 0) + 1
        if srv.json_object_only and body["response_format"]["type"] != "json_object":
            # what llama-cpp-python 0.3.36's server answers to an OpenAI json_schema response_format
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "1 validation error: {\'type\': \'literal_error\', \'loc\': '
                             b'(\'body\', \'response_format\', \'type\'), \'msg\': \\"Input should be \'text\' '
                             b'or \'json_object\'\\"}", "type": "internal_server_error"}}')
            return
        if tid == "T1110" and srv.calls[tid] == 1:
            self.send_response(503)
            self.end_headers()
            return
        content = ANSWERS.get(tid, '{"behaviours": []}')
        out = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                       "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
    srv.requests, srv.calls, srv.json_object_only = [], {}, False
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    th.join(5)


def _item(tid, name="x", text="Adversaries may scan ports of remote hosts."):
    return TextItem(f"attack:{tid}", tid, name, text, "Detection: watch netflow.", ("discovery",), True)


def _ext(server, tmp_path, **kw):
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return LLMExtractor(url, model="replay-model", cache_dir=tmp_path / "cache", backoff=0.01, **kw)


def test_llm_request_format_and_parsing(server, tmp_path):
    ex = _ext(server, tmp_path)
    links = ex.extract([_item("T1046", "Network Service Discovery")])
    path, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert body["model"] == "replay-model" and body["messages"][0]["role"] == "system"
    assert "horizontal_scan" in body["messages"][0]["content"]
    rf = body["response_format"]
    assert rf["type"] == "json_schema"
    enum = rf["json_schema"]["schema"]["properties"]["behaviours"]["items"]["properties"]["predicate"]["enum"]
    assert set(enum) == set(PREDICATES)
    by = {l.predicate: l for l in links}
    assert by["vertical_scan"].confidence == 0.9 and "wordlist" in by["vertical_scan"].evidence
    assert by["vertical_scan"].backend == "llm" and by["vertical_scan"].status == "ok"


def test_llm_malformed_is_retried_then_failed_and_5xx_recovers(server, tmp_path):
    ex = _ext(server, tmp_path, retries=3)
    links = ex.extract([_item("MALFORMED"), _item("T1110"), _item("T1003")])
    assert server.calls["MALFORMED"] == 3          # retried, then given up
    failed = [l for l in links if l.status == "failed"]
    assert len(failed) == 1 and failed[0].subject == "attack:MALFORMED" and "bad answer" in failed[0].extra["reason"]
    assert server.calls["T1110"] == 2               # 503 once, then answered
    assert [l.predicate for l in links if l.subject == "attack:T1110"] == ["brute_force"]
    assert not [l for l in links if l.subject == "attack:T1003"]  # empty answer: no links, not a failure
    assert ex.stats["failed"] == 1 and ex.stats["retries"] >= 3


def test_llm_cache_hit_makes_no_calls(server, tmp_path):
    items = [_item("T1046"), _item("T1110"), _item("MALFORMED")]
    first = _ext(server, tmp_path, retries=2).extract(items)
    n = len(server.requests)
    again = _ext(server, tmp_path, retries=2)
    second = again.extract(items[:2])
    assert len(server.requests) == n and again.stats["calls"] == 0 and again.stats["cache_hits"] == 2
    assert [l.row() for l in second] == [l.row() for l in first if l.status == "ok"]
    # another model or another text is another cache key
    other = LLMExtractor(again.url, model="other", cache_dir=tmp_path / "cache")
    assert other.cache_key(items[0]) != again.cache_key(items[0])
    assert again.cache_key(_item("T1046", text="changed")) != again.cache_key(items[0])


def test_llm_falls_back_to_json_object_schema(server, tmp_path):
    server.json_object_only = True
    ex = _ext(server, tmp_path, retries=2)
    links = ex.extract([_item("T1046"), _item("T1110")])
    kinds = [b["response_format"]["type"] for _, b in server.requests]
    assert kinds[:2] == ["json_schema", "json_object"] and set(kinds[2:]) == {"json_object"}  # switched once
    assert server.requests[1][1]["response_format"]["schema"] == ex.schema
    assert {l.predicate for l in links if l.subject == "attack:T1046"} == {"vertical_scan", "horizontal_scan"}
    assert ex.stats["failed"] == 0
    with pytest.raises(ValueError, match="response_format"):
        LLMExtractor("http://127.0.0.1:9", response_format="grammar")


def test_llm_unreachable_server_never_crashes(tmp_path):
    ex = LLMExtractor("http://127.0.0.1:9", cache_dir=tmp_path, retries=2, backoff=0.01, timeout=2)
    links = ex.extract([_item("T1046")])
    assert links[0].status == "failed" and "network" in links[0].extra["reason"]


def test_parse_answer_rejects_bad_shapes():
    names = set(PREDICATES)
    assert parse_answer('{"behaviours": []}', names) == []
    for bad in ['nope', '{"x": 1}', '{"behaviours": [{"predicate": "made_up", "confidence": 1, "evidence": ""}]}',
                '{"behaviours": [{"predicate": "flood", "confidence": 7, "evidence": ""}]}']:
        with pytest.raises(AnswerError):
            parse_answer(bad, names)


REAL_ITEMS = [
    TextItem("attack:T1498.001", "T1498.001", "Direct Network Flood",
             "Adversaries may attempt to cause a denial of service by directly sending a high-volume of network "
             "traffic to a target. UDP, ICMP or TCP floods saturate the bandwidth of the victim.", "", ("impact",), True),
    TextItem("attack:T1046", "T1046", "Network Service Discovery",
             "Adversaries may attempt to get a listing of services running on remote hosts, using port, vulnerability "
             "and/or wordlist scans.", "Detects rapid connections to multiple services or hosts in netflow.",
             ("discovery",), True),
    TextItem("attack:T1110.001", "T1110.001", "Password Guessing",
             "Adversaries may guess passwords by repeatedly logging in to SSH, RDP or FTP services.",
             "Detects many failed authentication attempts from one source.", ("credential-access",), True),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(url: str, timeout: float = 3) -> bool:
    try:
        urllib.request.urlopen(url + "/v1/models", timeout=timeout).read()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def real_url():
    """A real OpenAI-compatible server: GRAPHSENTRY_LLM_URL if it answers, else one this fixture starts from
    GRAPHSENTRY_LLM_SERVER_CMD ({port} is replaced by a free port on 127.0.0.1) and stops afterwards."""
    if os.environ.get("GRAPHSENTRY_LLM_TESTS") != "1":
        pytest.skip("real LLM test is opt-in: make test-llm (GRAPHSENTRY_LLM_TESTS=1)")
    url = os.environ.get("GRAPHSENTRY_LLM_URL", "")
    if url:  # asked for this server: a busy llama.cpp server can take a while to answer even /v1/models
        assert _reachable(url, timeout=120), f"GRAPHSENTRY_LLM_URL={url} does not answer /v1/models"
        yield url.rstrip("/")
        return
    cmd = os.environ.get("GRAPHSENTRY_LLM_SERVER_CMD", "")
    if not cmd:
        pytest.skip(f"no server at GRAPHSENTRY_LLM_URL={url!r} and no GRAPHSENTRY_LLM_SERVER_CMD; e.g. "
                    "GRAPHSENTRY_LLM_SERVER_CMD='scripts/llm_server.sh serve {port}' (see README)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(Path(os.environ.get("GRAPHSENTRY_LLM_SERVER_LOG", os.devnull)), "ab")
    proc = subprocess.Popen(shlex.split(cmd.replace("{port}", str(port))), stdout=log, stderr=log,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + float(os.environ.get("GRAPHSENTRY_LLM_START_S", "180"))
        while not _reachable(url):
            assert proc.poll() is None, f"server command exited with {proc.returncode}: {cmd}"
            assert time.monotonic() < deadline, f"server did not answer on {url} in time"
            time.sleep(1)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except ProcessLookupError:
            pass  # it already exited
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@pytest.mark.timeout(2400)  # a 1.5B model on 2 busy cores: minutes per answer
def test_llm_real_server(real_url, tmp_path):
    """Schema-valid answers from a real model, and a rebuild from the cache makes no call."""
    model = os.environ.get("GRAPHSENTRY_LLM_MODEL", "local")
    ex = LLMExtractor(real_url, model=model, cache_dir=tmp_path, retries=3, timeout=900)
    links = ex.extract(REAL_ITEMS)
    assert ex.stats["failed"] == 0, [l.extra for l in links if l.status == "failed"]
    assert ex.stats["calls"] >= len(REAL_ITEMS)
    for l in links:
        assert l.status == "ok" and l.predicate in PREDICATES and 0 <= l.confidence <= 1
        assert l.backend == "llm" and len(l.evidence) <= 160
    for p in sorted(tmp_path.rglob("*.json")):  # every cached answer passes the schema check again
        parse_answer(json.dumps({"behaviours": json.loads(p.read_text())["behaviours"]}), set(PREDICATES))
    again = LLMExtractor(real_url, model=model, cache_dir=tmp_path)
    assert [l.row() for l in again.extract(REAL_ITEMS)] == [l.row() for l in links]
    assert again.stats["calls"] == 0 and again.stats["cache_hits"] == len(REAL_ITEMS)
