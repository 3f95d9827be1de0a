"""The alert page's HTTP server: static pages, a JSON API and the triage actions.

Built on the standard library's :class:`http.server.ThreadingHTTPServer`: a few analysts' browsers
are the whole load, every request is a short SQLite query, and it adds no dependency to the daemon
it can run inside (``graphsentry serve --ui``). Live updates are polling of ``/api/stamp`` (a
number that moves when the alert store or the triage state changes), so no request stays open.

Safety (docs/alert-page.md, "Security"):

* every response carries a strict Content-Security-Policy (``default-src 'self'``, no inline script
  or style), ``nosniff``, ``frame-ancestors 'none'``; the pages build their DOM with ``textContent``;
* the Host header must name the bound address (no DNS rebinding onto a loopback server);
* with a token (required outside loopback) every data request needs it: a session cookie set by the
  sign-in form (``POST /login``) or an ``Authorization: Bearer`` header;
* triage POSTs need the per-server CSRF token in ``X-CSRF-Token``, a JSON body, and a same-origin
  ``Origin`` when the browser sends one.
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import secrets
import ssl
import threading
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from detector.ui.config import UIConfig, is_loopback
from detector.ui.context import alert_context, explanation
from detector.ui.fields import parse_finding, summary
from detector.ui.knowledge import default_catalog
from detector.ui.store import AlertQueue, Query
from detector.ui.triage import TriageError, TriageStore

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".txt": "text/plain; charset=utf-8", ".png": "image/png"}
MAX_BODY = 16 * 1024
COOKIE = "graphsentry_ui"


def url_path_is_page(path: str) -> bool:
    """A page a browser navigates to (sent to the sign-in form when not signed in), not an API call."""
    return path in ("/", "/alert")


def _safe(obj: Any) -> Any:
    """JSON-safe: non-finite floats become null (JavaScript's JSON.parse rejects NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_safe(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def to_json(obj: Any) -> bytes:
    # < > & escaped as \u003c... too: the body is inert even if something renders it as HTML.
    text = json.dumps(_safe(obj), separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


class AlertApp:
    """What the handler serves: the queue, the triage store and the knowledge catalog."""

    def __init__(self, cfg: UIConfig) -> None:
        self.cfg = cfg
        self.triage = TriageStore(cfg.triage_path)
        self.queue = AlertQueue(cfg.alerts, cfg.triage_path)
        self.csrf = secrets.token_urlsafe(32)
        self.catalog = default_catalog()
        self.static = {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}

    def close(self) -> None:
        self.triage.close()

    def stamp(self) -> dict:
        return {"alerts": self.queue.stamp(), "triage": self.triage.revision()}

    def alerts(self, params: dict[str, list[str]]) -> dict:
        q = Query.from_params(params)
        out = self.queue.groups(q) if q.group else self.queue.page(q)
        for item in out["items"]:
            for t in item.get("techniques", []):
                t.setdefault("name", self.catalog.name(t["id"]))
            tid = item.get("key", {}).get("technique")
            if tid and tid != "none":
                item["technique_name"] = self.catalog.name(tid)
        return out

    def alert(self, alert_id: str) -> dict | None:
        row = self.queue.row(alert_id)
        if row is None:
            return None
        state = self.triage.state(alert_id)
        s = summary({**row, **state})
        finding = parse_finding(row.get("finding"))
        why = explanation(finding)
        fired = {p["name"] for p in why["predicates"]}
        techs = [self.catalog.describe(t["id"], fired) for t in s["techniques"]]
        # the entity: the source, or the destination of a finding keyed by it (many sources against one host)
        by_dst = s["group_by"] == "dst" and bool(s["dst"])
        entity = s["dst"] if by_dst else s["src"]
        s["entity"] = entity
        others = self.queue.entity_findings(entity, by_dst=by_dst) if entity else []
        return {"summary": s, "finding": finding, "triage": state, "history": self.triage.history(alert_id),
                "explanation": why, "techniques": techs,
                "context": alert_context(self.cfg.archive, row, others, by_dst)}


class Handler(BaseHTTPRequestHandler):
    server_version = "graphsentry-ui"
    sys_version = ""
    app: AlertApp  # set on the subclass made per server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, fmt: str, *args: Any) -> None:  # access log at debug level, not stderr
        log.debug("%s " + fmt, self.client_address[0], *args)

    # --- responses -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        if self.app.cfg.tls:
            self.send_header("Strict-Transport-Security", "max-age=31536000")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, to_json(obj), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # --- checks ----------------------------------------------------------------------------------
    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        if not is_loopback(self.app.cfg.host):
            return True  # a token guards it; names in front of it are the operator's choice
        port = getattr(self.server, "server_port", 0)
        return host in {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

    def _authed(self) -> bool:
        token = self.app.cfg.token
        if not token:
            return True
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie") or "")
        except Exception:  # noqa: BLE001 - a malformed cookie header is just not a login
            return False
        c = cookie.get(COOKIE)
        return c is not None and hmac.compare_digest(c.value.encode(), self._session_value().encode())

    def _session_value(self) -> str:
        return hmac.new((self.app.cfg.token or "").encode(), b"graphsentry-ui-session", "sha256").hexdigest()

    def _guard(self) -> bool:
        if not self._host_ok():
            self._error(HTTPStatus.MISDIRECTED_REQUEST, "the Host header does not name this server")
            return False
        path = urlsplit(self.path).path
        open_paths = path in ("/login", "/favicon.ico") or path.startswith("/static/")  # no data behind these
        if not open_paths and not self._authed():
            if url_path_is_page(path):
                self._send(303, b"", "text/plain", {"Location": "/login"})
            else:
                self._error(HTTPStatus.UNAUTHORIZED, "sign in at /login, or send Authorization: Bearer TOKEN")
            return False
        return True

    # --- routes ----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        try:
            if self._guard():
                self._get()
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception:  # noqa: BLE001 - one bad request must not stop the server
            log.exception("GET %s failed", urlsplit(self.path).path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the server log)")

    do_HEAD = do_GET

    def _get(self) -> None:
        url = urlsplit(self.path)
        params = parse_qs(url.query, keep_blank_values=False, max_num_fields=100)
        if url.path in ("/", "/alert"):
            page = "queue.html" if url.path == "/" else "alert.html"
            html = self.app.static[page].read_text(encoding="utf-8").replace("__CSRF__", self.app.csrf)
            self._send(200, html.encode(), TYPES[".html"])
        elif url.path.startswith("/static/"):
            f = self.app.static.get(url.path[len("/static/"):])
            if f is None:
                self._error(404, "no such file")
            else:
                self._send(200, f.read_bytes(), TYPES.get(f.suffix, "application/octet-stream"))
        elif url.path == "/api/alerts":
            self._json(200, self.app.alerts(params))
        elif url.path == "/api/alert":
            aid = (params.get("id") or [""])[-1]
            out = self.app.alert(aid) if aid else None
            if out is None:
                self._error(404, "no alert with this id")
            else:
                self._json(200, out)
        elif url.path == "/api/stamp":
            self._json(200, self.app.stamp())
        elif url.path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        elif url.path == "/login":
            self._send(200, self.app.static["login.html"].read_bytes(), TYPES[".html"])
        else:
            self._error(404, "not found")

    def _login(self) -> None:
        """POST /login with the form's ``token``: a session cookie, then the queue."""
        token = self.app.cfg.token
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        body = self.rfile.read(n).decode("utf-8", "replace") if 0 < n <= MAX_BODY else ""
        given = (parse_qs(body).get("token") or [""])[-1]
        if not token:
            self._send(303, b"", "text/plain", {"Location": "/"})
        elif hmac.compare_digest(given.encode(), token.encode()):
            secure = "; Secure" if self.app.cfg.tls else ""
            cookie = f"{COOKIE}={self._session_value()}; HttpOnly; SameSite=Strict; Path=/{secure}"
            self._send(303, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
        else:
            self._error(HTTPStatus.UNAUTHORIZED, "wrong token")

    def do_POST(self) -> None:  # noqa: N802
        try:
            if self._guard():
                self._post()
        except TriageError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception:  # noqa: BLE001
            log.exception("POST %s failed", urlsplit(self.path).path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the server log)")

    def _post(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/login":
            self._login()
            return
        if url.path != "/api/triage":
            self._error(404, "not found")
            return
        if not hmac.compare_digest((self.headers.get("X-CSRF-Token") or "").encode(), self.app.csrf.encode()):
            self._error(HTTPStatus.FORBIDDEN, "missing or wrong CSRF token (reload the page)")
            return
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc.lower() != (self.headers.get("Host") or "").lower():
            self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the action as application/json")
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if not 0 < n <= MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body must be 1..{MAX_BODY} bytes")
            return
        try:
            body = json.loads(self.rfile.read(n))
        except ValueError:
            raise TriageError("the body is not JSON") from None
        aid = (parse_qs(url.query).get("id") or [""])[-1]
        if not aid or self.app.queue.row(aid) is None:
            self._error(404, "no alert with this id")
            return
        state = self.app.triage.apply(aid, body, self.app.cfg.actor)
        self._json(200, {"triage": state, "history": self.app.triage.history(aid)})


class UIServer:
    """The server on its own thread: ``start()``, ``url``, ``stop()`` (also a context manager)."""

    def __init__(self, cfg: UIConfig) -> None:
        self.cfg = cfg
        self.app = AlertApp(cfg)
        handler = type("BoundHandler", (Handler,), {"app": self.app})
        self.httpd = ThreadingHTTPServer((cfg.host, cfg.port), handler)
        self.httpd.daemon_threads = True
        if cfg.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.cfg.host, self.httpd.server_port
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.cfg.tls else 'http'}://{host}:{port}/"

    def start(self) -> UIServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="graphsentry-ui", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.app.close()

    def __enter__(self) -> UIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
