"""The checksum manifest of a model directory: what a loader may read, and that it is unchanged.

``manifest.json`` lists every file of the directory with its size and sha256::

    {"format": 1, "files": {"config.json": {"size": 1234, "sha256": "..."}, ...}}

:func:`verify_manifest` runs before a loader reads anything else and raises :class:`ModelDirError`
(a ``ValueError``: the CLI prints one line and exits 2) naming the first file that is missing, changed
or not listed. A loader therefore never reads a file the manifest does not cover, and a file dropped
in later (a ``detector.pkl``, say) is refused, not ignored.

Not listed, and allowed: :data:`IGNORED` — files that no loader reads: ``checkpoint.pt`` (the
pretraining state ``graphsentry train --resume`` continues from, written during training and loaded
with ``torch.load(weights_only=True)``), its temporary ``checkpoint.tmp``, and ``*.md`` notes.

Order of writing (``ModelBundle.save``, ``FraudBundle.save``): the old manifest is removed first (a save
that stops halfway leaves a directory that is refused, not a mix of old and new files); the bundle's
files are written; then :func:`write_manifest` — given the bytes of ``config.json``, which is not yet
in place — and last ``config.json`` itself, atomically. ``config.json`` stays the last file written:
the daemon reloads when it changes (:func:`detector.daemon.pipeline.model_fingerprint`) and then finds
a manifest that already covers the new files.

The manifest detects accidental change (a truncated copy, a partial write, a stray file); it is not a
signature: whoever can write the directory can rewrite the manifest. Safety against code execution
comes from the formats (JSON, ``np.load(allow_pickle=False)``, ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = 1
IGNORED = ("checkpoint.pt", "checkpoint.tmp", "*.md")
#: The alias symlinks of a model registry (``REGISTRY/champion -> versions/v0002``, training.registry), which
#: the daemon follows and reports.
REGISTRY_ALIASES = ("champion", "challenger", "previous")
RETRAIN = "retrain the model (graphsentry train --out DIR) or restore the directory as it was saved"


class ModelDirError(ValueError):
    """A model directory that cannot be used as it is; the message names the file and the fix."""


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED)


def _digest(data: bytes | Path) -> dict:
    h, size = hashlib.sha256(), 0
    if isinstance(data, bytes):
        h.update(data)
        size = len(data)
    else:
        with open(data, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def write_manifest(directory: str | os.PathLike, pending: dict[str, bytes] | None = None) -> Path:
    """Write ``manifest.json`` (atomically) for every file of ``directory`` but :data:`IGNORED` ones.

    ``pending``: files about to be written, by name and content (``config.json``, which a save writes
    after the manifest); they are listed with that content whether or not they exist yet.
    """
    d = Path(directory)
    pending = dict(pending or {})
    files = {}
    for p in sorted(d.iterdir()):
        name = p.name
        if name == MANIFEST or name in pending or _ignored(name) or name == MANIFEST + ".tmp":
            continue
        if not p.is_file():
            raise ModelDirError(f"{p} is not a regular file; a model directory holds only the model's files")
        files[name] = _digest(p)
    files.update({name: _digest(data) for name, data in pending.items()})
    tmp = d / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "files": dict(sorted(files.items()))}, indent=2))
    tmp.replace(d / MANIFEST)
    return d / MANIFEST


def remove_manifest(directory: str | os.PathLike) -> None:
    """Remove ``manifest.json``: the first step of a save (until the new one is written, loads refuse)."""
    (Path(directory) / MANIFEST).unlink(missing_ok=True)


def verify_manifest(directory: str | os.PathLike) -> dict[str, dict]:
    """The manifest's ``{name: {size, sha256}}`` after checking every file against it; ModelDirError
    naming the first file missing, changed or not listed (or the manifest itself when it is absent or
    not a manifest)."""
    d = Path(directory)
    path = d / MANIFEST
    if not path.is_file():
        if (d / "detector.pkl").exists():
            raise ModelDirError(f"{d} holds a pickled detector (detector.pkl) from an older graphsentry; "
                                f"pickles are never loaded: retrain the model (graphsentry train --out DIR)")
        raise ModelDirError(f"{d} has no {MANIFEST} (saved by an older graphsentry, or a save did not "
                            f"finish): retrain the model (graphsentry train --out DIR)")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError
        for name, entry in files.items():
            if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
                    or not isinstance(entry, dict) or set(entry) != {"size", "sha256"}):
                raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise ModelDirError(f"{path} is not a model manifest: {RETRAIN}") from None
    for name, entry in sorted(files.items()):
        p = d / name
        if not p.is_file():
            raise ModelDirError(f"{p} is missing (listed in {MANIFEST}): {RETRAIN}")
        if p.stat().st_size != entry["size"] or _digest(p)["sha256"] != entry["sha256"]:
            raise ModelDirError(f"{p} differs from the file that was saved (size or sha256 in {MANIFEST}): "
                                f"{RETRAIN}")
    for p in sorted(d.iterdir()):
        if p.name not in files and p.name != MANIFEST and not _ignored(p.name):
            raise ModelDirError(f"{p} is not part of the saved model (not in {MANIFEST}); no loader reads it: "
                                f"remove it, or {RETRAIN}")
    return files
