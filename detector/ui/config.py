"""Settings of the alert page server, validated once where they enter (CLI or ``serve --ui``).

Safe by default: the server binds 127.0.0.1; on any other address it refuses to start without an
access token (``--token-file`` or ``GRAPHSENTRY_UI_TOKEN``). TLS (certificate + key) is optional on
top of the token and recommended outside loopback.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BIND = "127.0.0.1:8080"
MIN_TOKEN_CHARS = 16


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); ValueError naming the fix."""
    text = str(text).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--bind {text!r} is not HOST:PORT; give e.g. --bind 127.0.0.1:8080")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"--bind {text!r}: port {port!r} is not a number; give e.g. --bind 127.0.0.1:8080") from None
    if not 0 <= p <= 65535:
        raise ValueError(f"--bind {text!r}: port {p} is outside 0..65535")
    return host, p


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class UIConfig:
    """Where the page reads from and how it listens.

    Args:
        alerts: the SQLite alert store the daemon writes (opened read-only).
        triage: the triage database (default: ``<alerts>.triage.db`` beside the store).
        archive: optional archive of scored records (``ingest.archive``) for flows and subgraphs.
        host, port: where to listen (default 127.0.0.1:8080; port 0 picks a free one).
        token: access token; required when ``host`` is not a loopback address.
        tls_cert, tls_key: serve HTTPS with this certificate and key (both or neither).
        actor: the name written in the change history for actions of this server's users.
    """

    alerts: Path
    triage: Path | None = None
    archive: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    actor: str = "analyst"

    def __post_init__(self) -> None:
        if not Path(self.alerts).is_file():
            raise ValueError(f"alert store not found: {self.alerts} (give the SQLite file the daemon's sqlite sink writes)")
        if self.archive is not None and not Path(self.archive).is_dir():
            raise ValueError(f"archive not found: {self.archive} (give the directory the daemon's archive writes to)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        for f in (self.tls_cert, self.tls_key):
            if f is not None and not Path(f).is_file():
                raise ValueError(f"TLS file not found: {f}")
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the access token has {len(self.token)} characters; use at least {MIN_TOKEN_CHARS} "
                             "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        if not is_loopback(self.host) and not self.token:
            raise ValueError(f"refusing to serve alerts on {self.host} (not loopback) without an access token: "
                             "give --token-file FILE or GRAPHSENTRY_UI_TOKEN (and --tls-cert/--tls-key), "
                             "or bind 127.0.0.1")
        if not self.actor or len(self.actor) > 64:
            raise ValueError(f"actor {self.actor!r}: give a name of 1..64 characters")

    @property
    def triage_path(self) -> Path:
        return Path(self.triage) if self.triage else Path(str(self.alerts) + ".triage.db")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def read_token(token_file: str | None) -> str | None:
    """The token from ``token_file`` (first line) or the ``GRAPHSENTRY_UI_TOKEN`` environment variable."""
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip().splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read --token-file {token_file}: {exc.strerror or exc}") from None
        return text[0].strip() if text else None
    env = os.environ.get("GRAPHSENTRY_UI_TOKEN", "").strip()
    return env or None
