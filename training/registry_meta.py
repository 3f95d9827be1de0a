"""What the registry records about a version besides its files: code version, knowledge artifact, times,
users, and flat views of nested metadata for ``graphsentry models diff``."""
from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any


class RegistryError(ValueError):
    """A registry operation that cannot be done as asked; the message names the fix."""


def now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def iso(ts: Any) -> str | None:
    if not isinstance(ts, (int, float)):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ts)))


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container without a passwd entry)
        return str(os.getuid())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_version() -> dict:
    """The package version and, when the code runs from a git checkout, its commit (None otherwise)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        package = _version("graphsentry")
    except PackageNotFoundError:  # pragma: no cover - a tree that is not installed
        package = None
    commit = None
    repo = Path(__file__).resolve().parents[1]
    try:
        p = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if p.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", p.stdout.strip()):
            commit = p.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": package, "git_commit": commit}


def installed_knowledge() -> dict | None:
    """The installed knowledge artifact's version and content hash (its manifest.json), if there is one."""
    path = Path(__file__).resolve().parents[1] / "knowledge" / "artifacts" / "default" / "manifest.json"
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or not m.get("hash"):
        return None
    return {"version": m.get("version"), "hash": m.get("hash"),
            "source": "installed artifact (knowledge/artifacts/default)"}


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path} cannot be read as JSON ({exc}); "
                            f"restore it from a backup of the registry") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path} is not a JSON object; restore it from a backup of the registry")
    return data


def flatten(d: Any, prefix: str = "", depth: int = 6) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and deeper values stay as they are (leaves)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict) and depth > 0:
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v and depth > 1:
                out.update(flatten(v, key, depth - 1))
            else:
                out[key] = v
    elif prefix:
        out[prefix] = d
    return out


def differences(a: dict, b: dict) -> list[dict]:
    fa, fb = flatten(a), flatten(b)
    return [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
