"""ATT&CK context for the alert page, from the bundled knowledge artifact (knowledge/artifacts/default).

For a technique id: its name, URL, tactics (names), parent, mitigations and D3FEND countermeasures
(``features.json``), and the ATT&CK text that links it to the predicates that fired
(``links.parquet``: the sentences the knowledge graph was extracted from).
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)


class TechniqueCatalog:
    """Technique id -> display facts, loaded once from an artifact directory."""

    def __init__(self, artifact: Path | None = None) -> None:
        from knowledge.features import DEFAULT_ARTIFACT

        self.dir = Path(artifact) if artifact else DEFAULT_ARTIFACT
        self._techs: dict[str, dict] = {}
        self._tactics: dict[str, str] = {}
        self._links: list[dict] | None = None
        try:
            spec = json.loads((self.dir / "features.json").read_text(encoding="utf-8"))
            self._tactics = {t["id"]: t["name"] for t in spec.get("tactics", [])}
            self._techs = {t["id"]: t for t in spec.get("techniques", [])}
        except (OSError, ValueError, KeyError, TypeError) as exc:  # the page works without it
            log.warning("knowledge artifact %s not readable (%s): techniques show by id only", self.dir, exc)

    def name(self, tid: str) -> str | None:
        t = self._techs.get(tid) or self._techs.get(tid.split(".")[0])
        return t.get("name") if t else None

    def _link_text(self, tid: str, predicates: set[str]) -> list[dict]:
        if self._links is None:
            try:
                import pyarrow.parquet as pq

                t = pq.read_table(self.dir / "links.parquet", columns=["source_id", "predicate", "confidence",
                                                                        "evidence", "status"])
                self._links = t.to_pylist()
            except Exception as exc:  # noqa: BLE001 - optional context
                log.warning("knowledge links not readable (%s)", exc)
                self._links = []
        rows = [r for r in self._links or [] if r["source_id"] == tid and r["status"] == "ok"]
        rows.sort(key=lambda r: (r["predicate"] not in predicates, -(r["confidence"] or 0)))
        seen, out = set(), []
        for r in rows:
            if r["evidence"] in seen:
                continue
            seen.add(r["evidence"])
            out.append({"predicate": r["predicate"], "confidence": r["confidence"], "text": r["evidence"],
                        "fired": r["predicate"] in predicates})
            if len(out) >= 5:
                break
        return out

    def describe(self, tid: str, fired: set[str] | None = None) -> dict:
        """Everything the page shows about one technique (only ``id`` when the artifact lacks it)."""
        t = self._techs.get(tid)
        if t is None:
            parent = self._techs.get(tid.split(".")[0]) if "." in tid else None
            return {"id": tid, "name": None, "parent_name": parent.get("name") if parent else None,
                    "url": f"https://attack.mitre.org/techniques/{tid.replace('.', '/')}/", "tactics": [],
                    "mitigations": [], "d3fend": [], "text": self._link_text(tid, fired or set())}
        return {
            "id": tid, "name": t.get("name"), "url": t.get("url"),
            "parent_name": self.name(t["parent"]) if t.get("parent") else None,
            "tactics": [self._tactics.get(x, x) for x in t.get("tactics", [])],
            "mitigations": t.get("mitigations", []), "d3fend": t.get("d3fend", []),
            "text": self._link_text(tid, fired or set()),
        }


@lru_cache(maxsize=1)
def default_catalog() -> TechniqueCatalog:
    return TechniqueCatalog()
