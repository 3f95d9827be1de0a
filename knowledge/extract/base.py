"""What every extraction backend reads and writes: :class:`TextItem` in, :class:`Link` out, through the
:class:`Extractor` protocol (``extract(items) -> list[Link]``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class TextItem:
    """What an extractor reads: a node id, its text and a few structured fields."""

    id: str                       # graph node id, e.g. "attack:T1046" or "capec:CAPEC-169"
    source_id: str                # "T1046"
    name: str
    text: str                     # name + description
    detection: str = ""           # detection guidance (ATT&CK analytics), may be empty
    tactics: tuple[str, ...] = ()
    network: bool = False         # observed by a network data component in ATT&CK


@dataclass
class Link:
    """One extracted (technique|pattern) -> predicate link with provenance."""

    subject: str                  # graph node id
    predicate: str
    confidence: float
    evidence: str
    backend: str
    protocols: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    status: str = "ok"            # ok | failed (llm gave no usable answer)
    low_confidence: bool = False
    extra: dict = field(default_factory=dict)

    def row(self) -> dict:
        d = asdict(self)
        d["protocols"], d["ports"] = list(self.protocols), list(self.ports)
        d["extra"] = {k: str(v) for k, v in self.extra.items()}
        return d


class Extractor(Protocol):
    name: str

    def extract(self, items: list[TextItem]) -> list[Link]:
        ...
