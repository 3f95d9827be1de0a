"""`graphsentry models ...`: read and change a file-based model registry (:mod:`training.registry`).

Human-readable tables by default, ``--json`` for machines. The registry is ``--registry DIR`` or the
``GRAPHSENTRY_REGISTRY`` environment variable. Errors a user can fix (unknown version, no previous
champion, another writer holding the lock, a version whose files changed) are one line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

ENV = "GRAPHSENTRY_REGISTRY"


def _registry(args: argparse.Namespace):
    from training.registry import Registry, RegistryError

    root = args.registry or os.environ.get(ENV)
    if not root:
        raise RegistryError(f"no registry given: add --registry DIR (or set {ENV})")
    return Registry(root, lock_timeout=args.lock_timeout)


def _fmt(v: Any, width: int = 40) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        text = f"{v:.6g}"
    elif isinstance(v, (list, tuple)):
        text = ",".join(str(x) for x in v) if len(v) <= 4 and all(not isinstance(x, (list, dict)) for x in v) \
            else f"[{len(v)} items]"
    elif isinstance(v, dict):
        text = json.dumps(v, sort_keys=True, default=str)
    else:
        text = str(v)
    return text if len(text) <= width else text[: width - 3] + "..."


def table(rows: list[list[Any]], header: list[str], width: int = 40) -> str:
    """A plain-text table: columns padded to their widest cell (cells cut at ``width`` characters)."""
    cells = [header] + [[_fmt(c, width) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def cmd_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    rows = reg.list()
    text = table([[r["version"], r["created"], ",".join(r["aliases"]) or None, r["parent"], r["detector"],
                   r["threshold"], r["records"], f"{r['data_from'] or '?'} .. {r['data_to'] or '?'}", r["gate"]]
                  for r in rows],
                 ["VERSION", "CREATED", "ALIASES", "PARENT", "DETECTOR", "THRESHOLD", "RECORDS", "DATA", "GATE"])
    _print(args, {"registry": str(reg.root), "aliases": reg.aliases(), "versions": rows},
           text if rows else f"{reg.root}: no versions")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    info = reg.show(args.version)
    if args.verify:
        reg.verify(info["version"])
        info["verified"] = True
    model, data, code, kg = (info.get(k) or {} for k in ("model", "data", "code", "knowledge"))
    lines = [
        f"version     {info['version']}" + (f"  ({', '.join(info['aliases'])})" if info["aliases"] else ""),
        f"path        {info['path']}",
        f"created     {_fmt(info.get('created'))}  by {_fmt(info.get('registered_by'))}",
        f"parent      {_fmt(info.get('parent'))}",
        f"source      {_fmt(info.get('source'), 200)}",
        f"model       {_fmt(model.get('kind'))}, detector {_fmt(model.get('detector'))}, "
        f"threshold {_fmt(model.get('threshold'))}, trained {_fmt(model.get('trained'))}",
        f"data        {_fmt(data.get('from'))} .. {_fmt(data.get('to'))}, "
        f"{_fmt((data.get('fingerprint') or {}).get('records'))} records, "
        f"sha256 {_fmt((data.get('fingerprint') or {}).get('sha256'), 200)}",
        f"code        graphsentry {_fmt(code.get('package'))}, git {_fmt(code.get('git_commit'), 200)}",
        f"knowledge   {_fmt(kg.get('version'))} hash {_fmt(kg.get('hash'), 200)} ({_fmt(kg.get('source'), 200)})",
        f"gate        {_fmt(info.get('gate'), 200)}",
    ]
    if args.verify:
        lines.append("checksums   every file matches manifest.json")
    metrics = {k: v for k, v in (info.get("metrics") or {}).items() if not isinstance(v, (dict, list))}
    if metrics:
        lines += ["", "metrics", table([[k, v] for k, v in sorted(metrics.items())], ["KEY", "VALUE"])]
    lines += ["", "files", table([[n, e.get("size"), e.get("sha256")] for n, e in sorted(info["files"].items())],
                                 ["FILE", "SIZE", "SHA256"], width=64)]
    _print(args, info, "\n".join(lines))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from training.registry import RegistryError

    reg = _registry(args)
    meta: dict = {}
    if args.metadata:
        try:
            meta = json.loads(args.metadata)
        except ValueError as exc:
            raise RegistryError(f"--metadata is not JSON ({exc}): give a JSON object, e.g. '{{\"gate\": \"pass\"}}'") \
                from None
        if not isinstance(meta, dict):
            raise RegistryError("--metadata must be a JSON object, e.g. '{\"gate\": \"pass\"}'")
    if args.parent:
        meta["parent"] = args.parent
    version = reg.register(args.model_dir, meta, reason=args.reason)
    out = {"version": version, "path": str(reg.resolve(version))}
    if args.promote:
        reg.promote(version, reason=args.reason or "registered with --promote", check_load=not args.no_load_check)
    elif args.challenger:
        reg.set_alias("challenger", version, reason=args.reason or "registered with --challenger")
    out["aliases"] = [a for a, v in reg.aliases().items() if v == version]
    _print(args, out, f"registered {version} at {out['path']}"
           + (f" ({', '.join(out['aliases'])})" if out["aliases"] else ""))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    reg = _registry(args)
    old = reg.alias("champion") if reg.versions_dir.is_dir() else None
    version = reg.promote(args.version, reason=args.reason, check_load=not args.no_load_check)
    _print(args, {"champion": version, "previous": old},
           f"champion: {version} (was {old or 'none'}); a daemon on {reg.root / 'champion'} loads it at its next poll")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    reg = _registry(args)
    old = reg.alias("champion") if reg.versions_dir.is_dir() else None
    version = reg.rollback(reason=args.reason, check_load=not args.no_load_check)
    prev = reg.alias("previous")
    _print(args, {"champion": version, "previous": prev, "was": old},
           f"champion: {version} (was {old}); previous: {prev or 'none'}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    reg = _registry(args)
    d = reg.diff(args.a, args.b)
    a, b = d["a"], d["b"]
    parts = [f"{a} -> {b}"]
    for name in ("config", "train_config"):
        parts += ["", f"{name} ({len(d[name])} differ)"]
        if d[name]:
            parts.append(table([[x["key"], x["a"], x["b"]] for x in d[name]], ["KEY", a, b]))
    rows = d["metrics"] if args.all_metrics else [m for m in d["metrics"] if m["differs"]]
    parts += ["", f"metrics ({sum(m['differs'] for m in d['metrics'])} of {len(d['metrics'])} differ"
              + ("" if args.all_metrics else "; --all-metrics shows every one") + ")"]
    if rows:
        parts.append(table([[m["key"], m["a"], m["b"], "*" if m["differs"] else ""] for m in rows],
                           ["KEY", a, b, "DIFFERS"]))
    parts += ["", f"files ({len(d['files'])} differ)"]
    if d["files"]:
        parts.append(table([[f["file"], (f["a"] or "-")[:16], (f["b"] or "-")[:16]] for f in d["files"]],
                           ["FILE", f"{a} sha256", f"{b} sha256"]))
    _print(args, d, "\n".join(parts))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    reg = _registry(args)
    version = reg.version_of(args.version)
    files = reg.verify(version)
    _print(args, {"version": version, "ok": True, "files": len(files)},
           f"{version}: {len(files)} files match manifest.json")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="the model registry: list, show, register, promote, roll back, diff",
                              description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--registry", metavar="DIR", help=f"the registry directory (default: ${ENV})")
        sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
        sp.add_argument("--lock-timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for another writer's lock (default: 10)")
        sp.set_defaults(func=func)
        return sp

    add("list", cmd_list, "the registered versions, their aliases and data")
    sp = add("show", cmd_show, "one version's metadata, metrics and files")
    sp.add_argument("version", metavar="VERSION|ALIAS", help="v0003, 3, champion, challenger or previous")
    sp.add_argument("--verify", action="store_true", help="also check every file against its manifest")
    sp = add("register", cmd_register, "copy a model directory into a new immutable version")
    sp.add_argument("model_dir", metavar="MODEL_DIR", help="the --out directory of graphsentry train")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--promote", action="store_true", help="make it the champion")
    g.add_argument("--challenger", action="store_true", help="point the challenger alias at it")
    sp.add_argument("--parent", metavar="VERSION", help="the version it was trained from (default: the champion)")
    sp.add_argument("--metadata", metavar="JSON", help="more metadata as a JSON object (gate, data, metrics, ...)")
    sp.add_argument("--reason", help="why (recorded in history.jsonl)")
    sp.add_argument("--no-load-check", action="store_true",
                    help="only check checksums before moving the champion, do not load the model")
    sp = add("promote", cmd_promote, "make a version the champion (the old one becomes previous)")
    sp.add_argument("version", metavar="VERSION|ALIAS")
    sp.add_argument("--reason", help="why (recorded in history.jsonl)")
    sp.add_argument("--no-load-check", action="store_true",
                    help="only check checksums before moving the champion, do not load the model")
    sp = add("rollback", cmd_rollback, "make the previous champion the champion again")
    sp.add_argument("--reason", help="why (recorded in history.jsonl)")
    sp.add_argument("--no-load-check", action="store_true",
                    help="only check checksums before moving the champion, do not load the model")
    sp = add("diff", cmd_diff, "what differs between two versions: config, metrics, files")
    sp.add_argument("a", metavar="A", help="version or alias")
    sp.add_argument("b", metavar="B", help="version or alias")
    sp.add_argument("--all-metrics", action="store_true", help="list every metric, not only those that differ")
    sp = add("verify", cmd_verify, "check a version's files against its manifest")
    sp.add_argument("version", metavar="VERSION|ALIAS")
