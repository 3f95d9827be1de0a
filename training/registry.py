"""A file-based model registry: immutable versions, aliases as symlinks, an append-only history.

Layout (``docs/retraining.md``, section "Model registry")::

    REGISTRY/
      versions/
        v0001/            a copy of a model directory (docs/model-directory.md), read-only, plus
          config.json     registry.json; its manifest.json lists every file, registry.json included,
          ...             so the checksum check of a load covers the metadata too
          registry.json   parent version, data fingerprint and time range, code version, knowledge
                          artifact hash, metrics, gate decision, created time
        v0002/
      champion -> versions/v0002     aliases: relative symlinks, swapped atomically (temp link + os.replace)
      previous -> versions/v0001
      challenger -> versions/v0003
      history.jsonl       one JSON line per event (register, promote, rollback, set-alias), appended only
      .lock               writers hold an exclusive flock on it; readers take no lock

A version folder appears whole or not at all: it is assembled under ``versions/.staging-*`` and
renamed into place. Writers (register, promote, rollback, set-alias) hold ``.lock``; a second writer
waits up to ``lock_timeout`` seconds, then gets :class:`RegistryLocked`. The lock is an ``flock``, so it
goes with its process: a writer killed mid-way (even SIGKILL) leaves no lock behind, and the next writer
removes the staging folder or temporary alias link it left (:attr:`Registry.stale_cleaned`).

The daemon follows an alias: started with ``model.path: REGISTRY/champion``, its model watcher resolves
the symlink at every poll (:func:`detector.daemon.pipeline.model_fingerprint` includes the resolved
directory), so a promotion or a rollback is a change it loads (manifest checked first) and swaps in
between two windows.

Nothing here unpickles anything: the registry reads JSON, and copies and hashes files as bytes.
Errors a user can fix are :class:`RegistryError` (a ``ValueError``: the CLI prints one line, exit 2).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from detector.model_files import MANIFEST, REGISTRY_ALIASES, ModelDirError, verify_manifest, write_manifest
from training.registry_meta import (
    RegistryError,
    code_version,
    differences,
    flatten,
    installed_knowledge,
    iso,
    now_text,
    read_json,
    sha256,
    user,
)

ALIASES = REGISTRY_ALIASES
METADATA = "registry.json"
HISTORY = "history.jsonl"
LOCK = ".lock"
_VERSION = re.compile(r"^v(\d{4,})$")
_NOT_COPIED = ("checkpoint.pt", "checkpoint.tmp")  # training state: no loader reads it, and it is large
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


class RegistryLocked(RegistryError):
    """Another writer holds the registry lock."""


class Registry:
    """A model registry in directory ``root`` (created by the first :meth:`register`).

    Args:
        root: the registry directory.
        lock_timeout: seconds a writer waits for another writer's lock before
            :class:`RegistryLocked` (default: 10).
    """

    def __init__(self, root: str | os.PathLike, lock_timeout: float = 10.0) -> None:
        if lock_timeout < 0:
            raise ValueError(f"lock_timeout={lock_timeout!r}: must be >= 0 seconds")
        self.root = Path(root)
        self.lock_timeout = float(lock_timeout)
        self.stale_cleaned: list[str] = []   # what the last lock holder removed of a killed writer's work

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r}, lock_timeout={self.lock_timeout})"

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    # -- reading -------------------------------------------------------------------------------

    def _require(self) -> None:
        if not self.versions_dir.is_dir():
            raise RegistryError(f"{self.root} is not a model registry (no versions/ folder): register a model "
                                f"first (graphsentry models register MODEL_DIR --registry {self.root})")

    def versions(self) -> list[str]:
        """Registered versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        found = [(int(m.group(1)), p.name) for p in self.versions_dir.iterdir()
                 if (m := _VERSION.match(p.name)) and p.is_dir()]
        return [name for _, name in sorted(found)]

    def alias(self, name: str) -> str | None:
        """The version an alias points to, or None when it is not set."""
        if name not in ALIASES:
            raise RegistryError(f"unknown alias {name!r}: use one of {', '.join(ALIASES)}")
        link = self.root / name
        if not link.is_symlink():
            return None
        target = Path(os.readlink(link)).name
        return target if _VERSION.match(target) else None

    def aliases(self) -> dict[str, str]:
        """``{alias: version}`` of the aliases that are set."""
        return {a: v for a in ALIASES if (v := self.alias(a)) is not None}

    def version_of(self, ref: str) -> str:
        self._require()
        ref = str(ref).strip()
        if ref in ALIASES:
            v = self.alias(ref)
            if v is None:
                raise RegistryError(f"alias {ref!r} is not set in {self.root}: "
                                    f"promote a version first (graphsentry models promote VERSION)")
            return v
        if re.fullmatch(r"\d+", ref):
            ref = f"v{int(ref):04d}"
        if _VERSION.match(ref) and (self.versions_dir / ref).is_dir():
            return ref
        known = self.versions()
        span = f"{known[0]}..{known[-1]}" if known else "none"
        raise RegistryError(f"no version {ref!r} in {self.root} (versions: {span}; aliases: {', '.join(ALIASES)}): "
                            f"see graphsentry models list --registry {self.root}")

    def resolve(self, ref: str) -> Path:
        """The version folder of a version (``v0003``, ``3``) or an alias (``champion``)."""
        return self.versions_dir / self.version_of(ref)

    def metadata(self, ref: str) -> dict:
        return read_json(self.resolve(ref) / METADATA)

    def verify(self, ref: str) -> dict[str, dict]:
        """Check every file of a version against its manifest (:func:`detector.model_files.verify_manifest`);
        the manifest's ``{name: {size, sha256}}``, or :class:`~detector.model_files.ModelDirError` naming the
        first file that is missing, changed or not listed."""
        return verify_manifest(self.resolve(ref))

    def history(self) -> list[dict]:
        """The events of ``history.jsonl``, oldest first (a torn last line, from a crash, is skipped)."""
        path = self.root / HISTORY
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict):
                out.append(ev)
        return out

    def list(self) -> list[dict]:
        """One row per version, oldest first: version, created, aliases, parent, detector, threshold, data."""
        self._require()
        by_version: dict[str, list[str]] = {}
        for a, v in self.aliases().items():
            by_version.setdefault(v, []).append(a)
        rows = []
        for v in self.versions():
            try:
                meta = read_json(self.versions_dir / v / METADATA)
            except RegistryError:
                meta = {"error": f"{METADATA} unreadable"}
            model, data = meta.get("model") or {}, meta.get("data") or {}
            rows.append({"version": v, "created": meta.get("created"), "aliases": by_version.get(v, []),
                         "parent": meta.get("parent"), "detector": model.get("detector"),
                         "threshold": model.get("threshold"), "records": (data.get("fingerprint") or {}).get("records"),
                         "data_from": data.get("from"), "data_to": data.get("to"), "gate": _gate_text(meta.get("gate")),
                         **({"error": meta["error"]} if "error" in meta else {})})
        return rows

    def show(self, ref: str) -> dict:
        """A version's metadata, the aliases pointing to it and its files (size, sha256)."""
        v = self.version_of(ref)
        d = self.versions_dir / v
        meta = read_json(d / METADATA)
        manifest = read_json(d / MANIFEST)
        return {**meta, "version": v, "aliases": [a for a, x in self.aliases().items() if x == v],
                "path": str(d), "files": manifest.get("files", {})}

    def diff(self, a: str, b: str) -> dict:
        """What differs between two versions: config and train config (changed keys only), metrics side by
        side (every scalar, ``differs`` marked), files whose sha256 differs (or that only one has)."""
        va, vb = self.version_of(a), self.version_of(b)
        da, db = self.versions_dir / va, self.versions_dir / vb
        ca, cb = read_json(da / "config.json"), read_json(db / "config.json")
        skip = ("metrics", "train_config", "created")
        config = differences({k: v for k, v in ca.items() if k not in skip},
                              {k: v for k, v in cb.items() if k not in skip})
        train = differences(ca.get("train_config") or {}, cb.get("train_config") or {})
        ma = flatten(read_json(da / METADATA).get("metrics") or {})
        mb = flatten(read_json(db / METADATA).get("metrics") or {})
        metrics = [{"key": k, "a": ma.get(k), "b": mb.get(k), "differs": ma.get(k) != mb.get(k)}
                   for k in sorted(set(ma) | set(mb))
                   if not isinstance(ma.get(k), (list, dict)) and not isinstance(mb.get(k), (list, dict))]
        fa = read_json(da / MANIFEST).get("files", {})
        fb = read_json(db / MANIFEST).get("files", {})
        files = [{"file": n, "a": (fa.get(n) or {}).get("sha256"), "b": (fb.get(n) or {}).get("sha256")}
                 for n in sorted(set(fa) | set(fb)) if n != METADATA and fa.get(n) != fb.get(n)]
        return {"a": va, "b": vb, "config": config, "train_config": train, "metrics": metrics, "files": files}

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the writers' lock (``ROOT/.lock``, an exclusive flock) for the block."""
        self._require()
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise RegistryLocked(f"another registry writer holds {path} (waited {self.lock_timeout:g} s): "
                                             f"let it finish and run the command again") from None
                    time.sleep(0.05)
            self.stale_cleaned = self._clean_stale()
            yield
        finally:
            os.close(fd)  # releases the flock

    def _clean_stale(self) -> list[str]:
        """Remove what a writer killed mid-way left: staging folders and temporary alias links. Only a writer
        creates them, and only while it holds the lock, so any found by the lock's holder are stale."""
        removed = []
        for p in sorted(self.versions_dir.glob(".staging-*")):
            _make_writable(p)
            shutil.rmtree(p, ignore_errors=True)
            removed.append(str(p.relative_to(self.root)))
        for p in sorted(self.root.glob(".*.tmp-*")):
            if p.is_symlink() or p.is_file():
                p.unlink()
                removed.append(p.name)
        if removed:
            _fsync_dir(self.versions_dir)
            _fsync_dir(self.root)
        return removed

    def _append(self, event: str, reason: str | None = None, **fields: Any) -> dict:
        ev = {"time": now_text(), "event": event, "user": user(), **fields, "reason": reason}
        line = (json.dumps(ev) + "\n").encode()
        fd = os.open(self.root / HISTORY, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return ev

    def _point(self, alias: str, version: str | None) -> None:
        """Point ``alias`` at ``version`` (None: remove it), atomically: a temporary link renamed over it."""
        link = self.root / alias
        if version is None:
            if link.is_symlink():
                link.unlink()
            return
        tmp = self.root / f".{alias}.tmp-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.path.join("versions", version), tmp)
        os.replace(tmp, link)
        _fsync_dir(self.root)

    def _champions(self) -> list[str]:
        """The champion stack replayed from the history: promote pushes, rollback pops."""
        stack: list[str] = []
        for ev in self.history():
            if ev.get("event") == "promote" and ev.get("version"):
                stack.append(ev["version"])
            elif ev.get("event") == "rollback" and stack:
                stack.pop()
        return stack

    def register(self, model_dir: str | os.PathLike, metadata: dict | None = None, reason: str | None = None) -> str:
        """Copy a model directory into a new immutable version; returns its name (``v0001``, ``v0002``, ...).

        The source's manifest is checked first (a broken directory is refused with its
        :class:`~detector.model_files.ModelDirError`). ``metadata`` adds to or overrides what is taken from
        the model's ``config.json``: ``parent`` (default: the champion when registering), ``data``,
        ``code``, ``knowledge``, ``metrics`` (merged), ``gate`` and any other key (kept as given).
        """
        src = Path(model_dir)
        if not (src / "config.json").is_file():
            raise RegistryError(f"{src} is not a model directory (no config.json): "
                                f"give the --out directory of graphsentry train")
        if self.versions_dir.resolve() in src.resolve().parents:
            raise RegistryError(f"{src} is already a version of this registry: promote it instead "
                                f"(graphsentry models promote VERSION)")
        verify_manifest(src)
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"{self.root} is a file, not a registry directory: give another --registry")
        if not self.root.exists():
            if not self.root.parent.is_dir():
                raise RegistryError(f"{self.root.parent} does not exist: create it, or give another --registry")
            self.root.mkdir()
        self.versions_dir.mkdir(exist_ok=True)
        with self.lock():
            known = self.versions()
            version = f"v{(int(known[-1][1:]) + 1) if known else 1:04d}"
            staging = self.versions_dir / f".staging-{version}-{os.getpid()}"
            if staging.exists():
                _make_writable(staging)
                shutil.rmtree(staging)
            try:
                staging.mkdir()
                for p in sorted(src.iterdir()):
                    if p.name in _NOT_COPIED or p.name == MANIFEST:
                        continue
                    if not p.is_file():
                        raise RegistryError(f"{p} is not a regular file; a model directory holds only files")
                    shutil.copyfile(p, staging / p.name)
                shutil.copyfile(src / MANIFEST, staging / MANIFEST)
                verify_manifest(staging)  # the copy is the model the source's manifest describes
                meta = self._metadata(version, src, staging, dict(metadata or {}))
                (staging / METADATA).write_text(json.dumps(meta, indent=2, default=str) + "\n")
                write_manifest(staging)  # now covering registry.json too
                verify_manifest(staging)
                for p in staging.iterdir():  # on disk before the rename publishes the version
                    os.chmod(p, _READ_ONLY)
                    fd = os.open(p, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                _fsync_dir(staging)
                os.chmod(staging, _READ_ONLY | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                os.rename(staging, self.versions_dir / version)
                _fsync_dir(self.versions_dir)
            except BaseException:
                if staging.exists():
                    _make_writable(staging)
                    shutil.rmtree(staging, ignore_errors=True)
                raise
            self._append("register", reason, version=version, source=str(src.resolve()), parent=meta.get("parent"))
        return version

    def _metadata(self, version: str, src: Path, copy: Path, given: dict) -> dict:
        cfg = read_json(copy / "config.json")
        fp = cfg.get("fingerprint") if isinstance(cfg.get("fingerprint"), dict) else {}
        kg = cfg.get("kg") if isinstance(cfg.get("kg"), dict) else {}
        knowledge = ({"version": kg.get("version"), "hash": kg["hash"], "source": "model config.json (kg)"}
                     if kg.get("hash") else installed_knowledge())
        parent = given.pop("parent", self.alias("champion"))
        meta: dict[str, Any] = {
            "version": version,
            "created": now_text(),
            "parent": parent,
            "source": str(src.resolve()),
            "content_sha256": sha256(copy / MANIFEST),  # equal for two registrations of the same files
            "model": {"kind": cfg.get("kind"), "format_version": cfg.get("format_version"),
                      "detector": cfg.get("detector"), "threshold": cfg.get("threshold"),
                      "trained": cfg.get("created")},
            "data": {"fingerprint": fp, "from": iso(fp.get("ts_min")), "to": iso(fp.get("ts_max"))},
            "code": code_version(),
            "knowledge": knowledge,
            "metrics": cfg.get("metrics") if isinstance(cfg.get("metrics"), dict) else {},
            "gate": None,
            "registered_by": user(),
        }
        for key, value in given.items():
            if key in ("data", "code", "knowledge", "metrics", "model") and isinstance(value, dict) \
                    and isinstance(meta.get(key), dict):
                meta[key] = {**meta[key], **value}
            else:
                meta[key] = value
        return meta

    def set_alias(self, alias: str, ref: str | None, reason: str | None = None) -> str | None:
        """Point ``challenger`` (or any alias) at a version, or remove it with ``ref=None``. ``champion`` is
        moved with :meth:`promote` / :meth:`rollback`, which keep ``previous`` and the history consistent."""
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}: use one of {', '.join(ALIASES)}")
        if alias in ("champion", "previous"):
            raise RegistryError(f"{alias} is set by promote and rollback: use graphsentry models promote VERSION")
        with self.lock():
            version = None if ref is None else self.version_of(ref)
            if version is not None:
                self.verify(version)
            old = self.alias(alias)
            self._point(alias, version)
            self._append("set-alias", reason, alias=alias, version=version, was=old)
        return version

    def check_loads(self, ref: str) -> None:
        """Load a version the way the daemon will (:func:`detector.bundle.load_bundle`: manifest, formats,
        knowledge artifact width); :class:`RegistryError` naming the version when it cannot be loaded."""
        version = self.version_of(ref)
        from detector.bundle import load_bundle

        try:
            load_bundle(self.versions_dir / version)
        except ValueError as exc:
            raise RegistryError(f"{version} cannot be loaded here, so a daemon would keep its current model: "
                                f"{' '.join(str(exc).split())}") from None

    def promote(self, ref: str, reason: str | None = None, check_load: bool = True) -> str:
        """``champion`` := ``ref``, ``previous`` := the old champion. ``ref`` is checked against its manifest
        first and, with ``check_load``, loaded (:meth:`check_loads`). A ``challenger`` alias pointing to the
        promoted version is removed."""
        with self.lock():
            version = self.version_of(ref)
            old = self.alias("champion")
            if old == version:
                raise RegistryError(f"{version} is already the champion of {self.root}: nothing to promote")
            self.verify(version)
            if check_load:
                self.check_loads(version)
            if old is not None:
                self._point("previous", old)
            self._point("champion", version)
            if self.alias("challenger") == version:
                self._point("challenger", None)
            self._append("promote", reason, version=version, champion=version, previous=old)
        return version

    def rollback(self, reason: str | None = None, check_load: bool = True) -> str:
        """``champion`` := ``previous`` (checked first, like :meth:`promote`), ``previous`` := the champion
        before that one in the history (or unset). Refused when there is no previous champion."""
        with self.lock():
            self._require()
            stack = self._champions()
            current = self.alias("champion")
            if current is None:
                raise RegistryError(f"{self.root} has no champion: nothing to roll back "
                                    f"(promote a version first: graphsentry models promote VERSION)")
            if stack and stack[-1] == current:
                if len(stack) < 2:
                    raise RegistryError(f"{self.root} has no previous champion to roll back to "
                                        f"(champion {current} is the first one promoted)")
                target, below = stack[-2], (stack[-3] if len(stack) >= 3 else None)
            else:  # the history does not end with this champion (edited by hand): trust the previous alias
                target, below = self.alias("previous"), None
                if target is None:
                    raise RegistryError(f"{self.root} has no previous champion to roll back to")
            self.verify(target)
            if check_load:
                self.check_loads(target)
            self._point("champion", target)
            self._point("previous", below)
            self._append("rollback", reason, version=target, champion=target, previous=below, was=current)
        return target


def _gate_text(gate: Any) -> str | None:
    if gate is None:
        return None
    if isinstance(gate, dict):
        return str(gate.get("decision") or gate.get("result") or gate.get("passed") or "recorded")
    return str(gate)


def _make_writable(d: Path) -> None:
    os.chmod(d, stat.S_IRWXU)
    for p in d.iterdir():
        if p.is_file() and not p.is_symlink():
            os.chmod(p, stat.S_IRUSR | stat.S_IWUSR)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - a file system without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# -- Prometheus ---------------------------------------------------------------------------------------


#: the registry's own metric: which version each alias points to. Distinct from the daemon's
#: ``graphsentry_model_info{version, path, alias}`` (detector/metrics.py: the model a daemon *scores*, and
#: the alias its configured path follows), so both can live in one CollectorRegistry.
ALIAS_METRIC = "graphsentry_registry_alias_info"


class ModelInfoCollector:
    """``graphsentry_registry_alias_info{version, alias} 1`` for each alias that is set, read from the symlinks
    at every scrape (a promotion by another process shows at the next scrape, without a refresh call)."""

    HELP = "Registry aliases: 1 for the version each alias points to"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def describe(self):
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(ALIAS_METRIC, self.HELP, labels=["version", "alias"])

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        g = GaugeMetricFamily(ALIAS_METRIC, self.HELP, labels=["version", "alias"])
        try:
            aliases = self.registry.aliases()
        except OSError:
            aliases = {}
        for alias, version in sorted(aliases.items()):
            g.add_metric([version, alias], 1.0)
        yield g


def export_model_info(registry: Registry | str | os.PathLike, registry_obj=None):
    """Register ``graphsentry_registry_alias_info{version,alias}`` (a gauge, 1 per set alias) for ``registry``
    in the Prometheus ``CollectorRegistry`` ``registry_obj`` (a new one when None, never the global one);
    returns that CollectorRegistry.

    The name differs from the daemon's ``graphsentry_model_info{version, path, alias}`` (the model a daemon
    scores; ``alias`` is the registry alias its ``model.path`` follows), so this collector may go into the
    daemon's own ``Metrics().registry`` as well as into one of its own.
    """
    from prometheus_client import CollectorRegistry

    reg = registry if isinstance(registry, Registry) else Registry(registry)
    target = registry_obj if registry_obj is not None else CollectorRegistry(auto_describe=True)
    target.register(ModelInfoCollector(reg))
    return target


__all__ = ["ALIASES", "ALIAS_METRIC", "ModelDirError", "ModelInfoCollector", "Registry", "RegistryError", "RegistryLocked",
           "code_version", "export_model_info", "flatten"]
