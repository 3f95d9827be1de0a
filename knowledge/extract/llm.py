"""LLM backend: any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, llama.cpp server, Ollama,
hosted APIs) with a JSON-schema constrained answer.

* Request: a system prompt with the predicate vocabulary (name: definition) and one user message with
  the technique text; ``response_format = {"type": "json_schema", "json_schema": {...}}`` whose schema
  only allows predicate names from the vocabulary (small models run away without it).
  Servers spell that constraint two ways: OpenAI, vLLM and llama.cpp's own ``llama-server`` take
  ``{"type": "json_schema", "json_schema": {"schema": ...}}``; ``llama-cpp-python``'s server (0.3.x) rejects
  it (HTTP 500 "Input should be 'text' or 'json_object'") and wants ``{"type": "json_object", "schema": ...}``.
  With ``response_format="auto"`` (default) the first 400/422, or error naming ``response_format``, switches
  to the second form for the rest of the run; ``"json_schema"`` / ``"json_object"`` pin one.
* Robustness: each call retries with exponential backoff on network errors, HTTP 429/5xx and on
  answers that do not parse, do not fit the schema or were cut at ``max_tokens``; a retry after a bad
  answer raises the temperature by 0.3 (at temperature 0 the same prompt gives the same bad answer).
  After ``retries`` attempts the item is recorded as ``status="failed"`` and the build goes on. A
  minimum interval between calls rate-limits us.
* Cache: one JSON file per (sha256 of the text, model, prompt version) under ``cache_dir``; a rebuild
  with the same inputs makes no calls. Failures are not cached (a later run tries again).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from knowledge.extract.base import Link, TextItem
from knowledge.predicates import PREDICATES

log = logging.getLogger(__name__)

PROMPT_VERSION = "3"
MAX_TEXT = 1000  # characters of technique text (name + description) sent
MAX_DETECTION = 500  # characters of detection guidance sent: a 1.5B model on a busy CPU core reads ~7 tokens/s
SYSTEM = (
    "You map attack technique descriptions to network behaviours visible in flow records "
    "(source/destination IP and port, protocol, bytes, packets, duration, TCP state). "
    "Choose only behaviours that the text implies would be seen on the network when the technique is used. "
    "If the technique is not visible in network flows, return an empty list. "
    "For each behaviour give a confidence between 0 and 1 and, as evidence, copy a short phrase (at most 15 words) "
    "from the technique text that supports it, never from this list of behaviours.\n"
    "Behaviours:\n"
)


def response_schema(names: list[str]) -> dict:
    """JSON schema of an answer: {"behaviours": [{"predicate", "confidence", "evidence"}]}."""
    return {
        "type": "object",
        "properties": {
            "behaviours": {
                "type": "array", "maxItems": 6,
                "items": {
                    "type": "object",
                    "properties": {
                        "predicate": {"type": "string", "enum": names},
                        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                        # no maxLength: llama.cpp's grammar for a 160-char bound made generation ~10x slower;
                        # parse_answer truncates instead
                        "evidence": {"type": "string"},
                    },
                    "required": ["predicate", "confidence", "evidence"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["behaviours"],
        "additionalProperties": False,
    }


class AnswerError(ValueError):
    """The model's answer is not valid JSON for the schema."""


def parse_answer(content: str, names: set[str]) -> list[dict]:
    """Validate a model answer against the schema (without a jsonschema dependency)."""
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, TypeError) as e:
        raise AnswerError(f"not JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("behaviours"), list):
        raise AnswerError("missing 'behaviours' list")
    out = []
    for b in data["behaviours"]:
        if not isinstance(b, dict):
            raise AnswerError("behaviour is not an object")
        p, c, ev = b.get("predicate"), b.get("confidence"), b.get("evidence", "")
        if p not in names:
            raise AnswerError(f"unknown predicate {p!r}")
        if not isinstance(c, (int, float)) or not 0 <= c <= 1:
            raise AnswerError(f"bad confidence {c!r}")
        out.append({"predicate": p, "confidence": float(c), "evidence": str(ev)[:160]})
    return out


def _error_text(e: urllib.error.HTTPError) -> str:
    """First 200 characters of an HTTP error body (servers say there why they refused)."""
    try:
        return e.read(2000).decode("utf-8", "replace").strip()[:200]
    except Exception:  # noqa: BLE001 - the body is only a diagnostic
        return ""


class LLMExtractor:
    """Extractor over an OpenAI-compatible chat-completions endpoint."""

    name = "llm"

    def __init__(self, url: str, model: str = "local", cache_dir: str | Path | None = None, retries: int = 3,
                 backoff: float = 1.0, min_interval: float = 0.0, timeout: float = 120.0, api_key: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 400, response_format: str = "auto"):
        if response_format not in ("auto", "json_schema", "json_object"):
            raise ValueError(f"response_format={response_format!r}: choose auto, json_schema or json_object")
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/v1/chat/completions" if not self.url.endswith("/v1") else "/chat/completions"
        self.model = model
        self.cache_dir = Path(cache_dir or os.environ.get("GRAPHSENTRY_LLM_CACHE", Path.home() / ".cache" / "graphsentry" / "llm"))
        self.retries, self.backoff, self.min_interval, self.timeout = retries, backoff, min_interval, timeout
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.temperature, self.max_tokens = temperature, max_tokens
        self.response_format = response_format
        self._format = "json_object" if response_format == "json_object" else "json_schema"
        self.names = sorted(PREDICATES)
        self.schema = response_schema(self.names)
        self.system = SYSTEM + "\n".join(f"- {n}: {PREDICATES[n].description}" for n in self.names)
        self.stats = {"calls": 0, "cache_hits": 0, "retries": 0, "failed": 0,
                      "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0}
        self._last_call = 0.0
        self._lock = threading.Lock()

    # -------------------------------------------------------------- cache
    def user_message(self, item: TextItem) -> str:
        text = item.text[:MAX_TEXT]
        if item.detection:
            text += "\n" + item.detection[:MAX_DETECTION]
        return f"Technique {item.source_id}: {item.name}\n\n{text}"

    def cache_key(self, item: TextItem) -> str:
        """sha256 of (sha256 of the text sent, model, prompt version)."""
        h = hashlib.sha256(self.user_message(item).encode()).hexdigest()
        return hashlib.sha256(f"{h}|{self.model}|{PROMPT_VERSION}".encode()).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    # -------------------------------------------------------------- HTTP
    def request_body(self, item: TextItem, temperature: float | None = None) -> dict:
        if self._format == "json_schema":
            rf = {"type": "json_schema", "json_schema": {"name": "behaviours", "strict": True, "schema": self.schema}}
        else:  # llama-cpp-python's spelling of the same constraint
            rf = {"type": "json_object", "schema": self.schema}
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": self.system},
                         {"role": "user", "content": self.user_message(item)}],
            "temperature": self.temperature if temperature is None else temperature,
            "max_tokens": self.max_tokens,
            "response_format": rf,
        }

    def _post(self, body: dict) -> dict:
        with self._lock:  # rate limit: at least min_interval between request starts
            wait = self._last_call + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_call = time.monotonic()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        self.stats["calls"] += 1
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read())

    def ask(self, item: TextItem) -> tuple[list[dict] | None, str]:
        """Answer for one item: (behaviours, "") or (None, reason) after the retries are spent."""
        key = self.cache_key(item)
        path = self._cache_path(key)
        if path.exists():
            self.stats["cache_hits"] += 1
            return json.loads(path.read_text())["behaviours"], ""
        reason = ""
        temperature = self.temperature
        attempt = 0
        while attempt < self.retries:
            if attempt:
                self.stats["retries"] += 1
                time.sleep(self.backoff * 2 ** (attempt - 1))
            attempt += 1
            body = self.request_body(item, temperature)
            t0 = time.monotonic()
            try:
                resp = self._post(body)
                choice = resp["choices"][0]
                content = choice["message"]["content"]
                if choice.get("finish_reason") == "length":
                    raise AnswerError(f"cut at max_tokens={self.max_tokens}")
                behaviours = parse_answer(content, set(self.names))
            except urllib.error.HTTPError as e:
                detail = _error_text(e)
                reason = f"http {e.code}: {detail}" if detail else f"http {e.code}"
                refused = e.code in (400, 422) or "response_format" in detail  # llama-cpp-python answers 500
                if refused and self.response_format == "auto" and self._format == "json_schema":
                    log.info("llm: server refused response_format json_schema (%s); using json_object + schema",
                             reason)
                    self._format = "json_object"
                    attempt -= 1  # the switch is not one of the item's attempts
                    continue
                if e.code < 500 and e.code != 429:
                    break  # a client error will not fix itself
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = f"network: {e}"
                continue
            except (AnswerError, KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                reason = f"bad answer: {e}"
                temperature = min(temperature + 0.3, 1.0)  # the same prompt at the same temperature repeats itself
                continue
            seconds = time.monotonic() - t0
            usage = resp.get("usage") or {}
            self.stats["seconds"] += seconds
            for k in ("prompt_tokens", "completion_tokens"):
                self.stats[k] += int(usage.get(k) or 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"id": item.source_id, "model": self.model, "prompt_version": PROMPT_VERSION,
                                       "behaviours": behaviours, "seconds": round(seconds, 3),
                                       "attempts": attempt, "temperature": temperature,
                                       "usage": {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens")}},
                                      sort_keys=True))
            tmp.replace(path)
            return behaviours, ""
        self.stats["failed"] += 1
        log.warning("llm: %s failed after %d attempts: %s", item.source_id, attempt, reason)
        return None, reason

    def extract(self, items: list[TextItem]) -> list[Link]:
        links: list[Link] = []
        for it in items:
            behaviours, reason = self.ask(it)
            if behaviours is None:
                links.append(Link(it.id, "", 0.0, "", self.name, status="failed", extra={"reason": reason}))
                continue
            best: dict[str, dict] = {}
            for b in behaviours:
                if b["predicate"] not in best or b["confidence"] > best[b["predicate"]]["confidence"]:
                    best[b["predicate"]] = b
            for p, b in sorted(best.items()):
                pr = PREDICATES[p]
                links.append(Link(it.id, p, round(b["confidence"], 4), b["evidence"], self.name, pr.protocols, pr.ports,
                                  extra={"model": self.model}))
        return links
