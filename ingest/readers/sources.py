"""Input sources: plain files, compressed files (.gz/.bz2/.zst/.lz4) and zip archives (one input per member)."""
from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa

HEAD_BYTES = 64 * 1024
_COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}


@dataclass
class InputSpec:
    """One logical input: a file, a decompressed file, or one member of a zip archive."""

    name: str                          # shown in stats and dead letters: path or "archive.zip!member"
    path: str                          # the file on disk
    open: Callable[[], BinaryIO]       # a fresh decompressed byte stream
    head: bytes                        # the first bytes of that stream (for sniffing)
    member: str | None = None
    compression: str | None = None
    in_memory: bool = False            # the bytes come from memory (a tailed chunk), not from ``path``

    @property
    def plain(self) -> bool:
        """True when ``path`` itself holds the bytes (needed by pcap/Parquet readers)."""
        return self.member is None and self.compression is None and not self.in_memory


def memory_spec(name: str, data: bytes) -> InputSpec:
    """An input held in memory (e.g. new lines of a tailed file) that stats and dead letters call ``name``."""
    return InputSpec(name=name, path=name, open=lambda: io.BytesIO(data), head=data[:HEAD_BYTES], in_memory=True)


def unreadable_spec(path: str) -> InputSpec:
    """A stand-in for an input whose bytes could not even be opened (its plan entry says why)."""
    def refuse() -> BinaryIO:
        raise OSError(f"{path} could not be opened")
    return InputSpec(name=path, path=path, open=refuse, head=b"")


def _read_head(opener: Callable[[], BinaryIO]) -> bytes:
    with opener() as fh:
        return fh.read(HEAD_BYTES)


def expand(path: str | os.PathLike) -> list[InputSpec]:
    """Turn a user path into input specs (zip -> its file members, in archive order)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"input not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"input is a directory, give the files in it: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PK\x03\x04" and zipfile.is_zipfile(path):
        specs = []
        with zipfile.ZipFile(path) as zf:
            members = [i.filename for i in zf.infolist() if not i.is_dir()
                       and not os.path.basename(i.filename).startswith(".")
                       and not i.filename.startswith("__MACOSX/")]
        for m in members:
            def opener(m: str = m) -> BinaryIO:
                zf = zipfile.ZipFile(path)
                fh = zf.open(m)
                return _ClosingBoth(fh, zf)
            specs.append(InputSpec(name=f"{path}!{m}", path=path, open=opener, head=_read_head(opener),
                                   member=m))
        return specs
    ext = os.path.splitext(path)[1].lower()
    comp = _COMPRESSED.get(ext)
    if comp is not None:
        def opener() -> BinaryIO:
            return pa.input_stream(path, compression=comp)
        # a corrupt or truncated stream raises here: the caller reports the input as unreadable
        return [InputSpec(name=path, path=path, open=opener, head=_read_head(opener), compression=comp)]

    def opener() -> BinaryIO:
        return open(path, "rb")
    return [InputSpec(name=path, path=path, open=opener, head=_read_head(opener))]


class _ClosingBoth(io.RawIOBase):
    """A zip member stream that also closes its ZipFile."""

    def __init__(self, fh: BinaryIO, zf: zipfile.ZipFile) -> None:
        super().__init__()
        self._fh, self._zf = fh, zf

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._fh.read(n)

    def readinto(self, b: bytearray) -> int:
        data = self._fh.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
            self._zf.close()
        super().close()
