"""``graphsentry ui``: the analysts' alert page; ``graphsentry ui export-verdicts``: verdicts as labels.

    graphsentry ui --alerts out/demo/alerts.db                  # http://127.0.0.1:8080/
    graphsentry ui --alerts alerts.db --archive archive/ --bind 127.0.0.1:9000
    graphsentry ui export-verdicts --alerts alerts.db --out verdicts.csv
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from detector.ui.config import DEFAULT_BIND, UIConfig, parse_bind, read_token

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ui", help="the analysts' alert page (queue, alert detail, triage) on 127.0.0.1",
        description="Serve the alert queue and alert pages of a SQLite alert store, with triage. "
                    "Binds 127.0.0.1 unless --bind says otherwise; outside loopback an access token is required.",
    )
    _store_args(p, required=False)
    p.add_argument("--archive", metavar="DIR", help="archive of scored records: evidence flows, subgraphs, timelines")
    p.add_argument("--bind", default=DEFAULT_BIND, metavar="HOST:PORT", help=f"where to listen (default {DEFAULT_BIND})")
    p.add_argument("--token-file", metavar="FILE",
                   help="file whose first line is the access token (else GRAPHSENTRY_UI_TOKEN); needed off loopback")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.add_argument("--actor", default="analyst", help="name recorded in the change history (default: analyst)")
    p.set_defaults(func=_serve)
    sub = p.add_subparsers(dest="ui_command", metavar="COMMAND")
    e = sub.add_parser("export-verdicts", help="write closed alerts' verdicts as the CSV retraining reads",
                       description="Write alert_id,verdict,reason for every alert closed as true or false "
                                   "positive (graphsentry retrain --verdicts reads it).")
    _store_args(e, required=False, suppress=True)
    e.add_argument("--out", required=True, metavar="CSV", help="where to write the verdicts")
    e.set_defaults(func=_export)


def _store_args(p: argparse.ArgumentParser, required: bool, suppress: bool = False) -> None:
    kw: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("--alerts", metavar="ALERTS.db", required=required, help="the SQLite alert store", **kw)
    p.add_argument("--triage", metavar="TRIAGE.db", help="triage database (default: ALERTS.db.triage.db)", **kw)


def _paths(args: argparse.Namespace) -> tuple[Path, Path | None]:
    if not getattr(args, "alerts", None):
        raise ValueError("give --alerts ALERTS.db (the SQLite file of the daemon's sqlite sink)")
    return Path(args.alerts), Path(args.triage) if getattr(args, "triage", None) else None


def _serve(args: argparse.Namespace) -> int:
    from detector.ui.server import UIServer

    alerts, triage = _paths(args)
    host, port = parse_bind(args.bind)
    cfg = UIConfig(alerts=alerts, triage=triage, archive=Path(args.archive) if args.archive else None,
                   host=host, port=port, token=read_token(args.token_file),
                   tls_cert=Path(args.tls_cert) if args.tls_cert else None,
                   tls_key=Path(args.tls_key) if args.tls_key else None, actor=args.actor)
    server = UIServer(cfg)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops it like Ctrl-C
    print(f"graphsentry ui: serving {alerts} on {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        server.app.close()
    print("graphsentry ui: stopped", file=sys.stderr)
    return 0


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _export(args: argparse.Namespace) -> int:
    from detector.ui.triage import TriageStore, export_verdicts

    alerts, triage = _paths(args)
    path = triage or Path(str(alerts) + ".triage.db")
    if not path.is_file():
        raise ValueError(f"no triage database at {path}: triage some alerts in `graphsentry ui` first, or give --triage")
    store = TriageStore(path)
    try:
        n = export_verdicts(store, args.out)
    finally:
        store.close()
    print(f"{n} verdicts written to {args.out}")
    return 0


def start_beside_daemon(cfg: dict, bind: str | None):
    """``graphsentry serve --ui HOST:PORT``: the page on the daemon's SQLite alert store (and its archive
    when the config's ``archive`` section is enabled), on a thread.

    Returns the started :class:`~detector.ui.server.UIServer` (call ``stop()``), or None without ``bind``."""
    from detector.ui.server import UIServer

    if not bind:
        return None
    sinks = [s for s in (cfg.get("alerts") or {}).get("sinks") or [] if (s or {}).get("type") == "sqlite"]
    if not sinks:
        raise ValueError("--ui needs a sqlite alert sink in the config (alerts.sinks: [{type: sqlite, path: ...}])")
    path = Path(sinks[0].get("path", "alerts.db"))
    if not path.exists():  # the daemon creates it too; create it first so the page can open it
        from detector.alerts.sinks import SQLiteAlertStore

        SQLiteAlertStore(path).close()
    host, port = parse_bind(bind)
    arch = cfg.get("archive") or {}
    archive = Path(arch["path"]) if arch.get("enabled") and arch.get("path") else None
    if archive is not None:
        archive.mkdir(parents=True, exist_ok=True)  # the daemon creates it too
    server = UIServer(UIConfig(alerts=path, archive=archive, host=host, port=port, token=read_token(None))).start()
    log.info("alert page on %s", server.url)
    print(f"graphsentry serve: alert page on {server.url}", flush=True)
    return server
