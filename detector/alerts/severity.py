"""Severity of a finding from what it is about, not from the score margin alone.

Points, added up (docs/findings.md, "Severity"):

============================  =====================================================================
impact of the technique       0 no technique; 1 Reconnaissance, Resource Development, Discovery;
                              2 any other tactic; 3 Impact, Exfiltration, Command and Control,
                              Lateral Movement, Credential Access (the highest of its tactics)
records                       +1 at >= 50 flagged records, +2 at >= 1000
spread                        +1 when >= 100 distinct sources, destinations or destination services
                              (address:port)
score margin                  +1 when the best score is >= 2x the threshold
direction / asset             +1 when the traffic's direction is the one the technique's tactic
                              threatens (:data:`TACTIC_DIRECTION`): inbound (external -> internal)
                              for reconnaissance, resource development, initial access; internal -> internal
                              (east-west) for discovery, lateral movement, collection; outbound
                              (internal -> external) for command and control, exfiltration; inbound
                              or east-west for impact and the other tactics; inbound for a finding
                              without a technique
============================  =====================================================================

0-1 points Low, 2-3 Medium, 4-5 High, >= 6 Critical. Critical needs a technique of impact >= 2: an
anomaly the knowledge layer does not name is at most High. Transactions (card fraud) have no tactic:
their impact is 2 (financial fraud), and no direction. Internal addresses: ``alerts.internal_networks``.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from detector.alerts.attack import technique

#: impact per tactic (ATT&CK tactic ids); tactics not listed count 2
TACTIC_IMPACT: dict[str, int] = {
    "TA0043": 1, "TA0042": 1, "TA0007": 1,                    # Reconnaissance, Resource Development, Discovery
    "TA0040": 3, "TA0010": 3, "TA0011": 3, "TA0008": 3, "TA0006": 3,  # Impact, Exfiltration, C2, Lateral, Cred.
}
#: the directions in which a tactic's technique threatens the monitored assets; tactics not listed: DEFAULT_DIRECTIONS
TACTIC_DIRECTION: dict[str, frozenset] = {
    "TA0043": frozenset({"inbound"}), "TA0001": frozenset({"inbound"}), "TA0040": frozenset({"inbound", "internal"}),
    "TA0042": frozenset({"inbound"}),
    "TA0007": frozenset({"internal"}), "TA0008": frozenset({"internal"}), "TA0009": frozenset({"internal"}),
    "TA0011": frozenset({"outbound"}), "TA0010": frozenset({"outbound"}),
}
DEFAULT_DIRECTIONS = frozenset({"inbound", "internal"})
UNNAMED_DIRECTIONS = frozenset({"inbound"})
RECORDS_STEPS = (50, 1000)
SPREAD = 100
MARGIN = 2.0
LEVELS = ((6, 5), (4, 4), (2, 3))  # (min points, severity_id); below: Low (2)


@dataclass(frozen=True)
class FindingFacts:
    """What severity looks at, for one finding."""

    technique: str | None        # ATT&CK id, None or "none" when the knowledge layer named none
    records: int                 # flagged records folded into the finding
    sources: int = 1             # distinct source endpoints
    destinations: int = 1        # distinct destination endpoints
    services: int = 1            # distinct destination services (address:port)
    max_score: float = float("nan")
    threshold: float | None = None
    direction: str = ""          # inbound, outbound, internal or external (Networks.direction)
    transactions: bool = False


def impact(tid: str | None, transactions: bool = False) -> int:
    if transactions:
        return 2
    if not tid or tid == "none":
        return 0
    _name, tactics = technique(tid)
    return max((TACTIC_IMPACT.get(t, 2) for t in tactics), default=2)


def threatened(tid: str | None) -> frozenset:
    """The directions in which the technique threatens the monitored assets (the union over its tactics)."""
    if not tid or tid == "none":
        return UNNAMED_DIRECTIONS
    _name, tactics = technique(tid)
    if not tactics:
        return DEFAULT_DIRECTIONS
    return frozenset().union(*(TACTIC_DIRECTION.get(t, DEFAULT_DIRECTIONS) for t in tactics))


def points(f: FindingFacts) -> dict[str, int]:
    """Each term of the severity, by name (the finding carries them in ``unmapped.severity_points``)."""
    ratio = (f.max_score / f.threshold) if f.threshold and f.threshold > 0 and np.isfinite(f.max_score) else 1.0
    return {
        "impact": impact(f.technique, f.transactions),
        "records": sum(f.records >= s for s in RECORDS_STEPS),
        "spread": int(max(f.sources, f.destinations, f.services) >= SPREAD),
        "margin": int(ratio >= MARGIN),
        "direction": int(not f.transactions and f.direction in threatened(f.technique)),
    }


def severity(f: FindingFacts) -> int:
    """OCSF ``severity_id``: 2 Low, 3 Medium, 4 High, 5 Critical (see the module docstring)."""
    return severity_of(points(f))


def severity_of(p: dict[str, int]) -> int:
    """:func:`severity` from the finding's :func:`points`."""
    total = sum(p.values())
    sev = next((s for need, s in LEVELS if total >= need), 2)
    if sev == 5 and p["impact"] < 2:
        sev = 4
    return sev


#: the default internal (monitored) networks: private, loopback, link-local and shared (CGNAT) space
DEFAULT_INTERNAL = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
                    "169.254.0.0/16", "fc00::/7", "fe80::/10", "::1/128")


class Networks:
    """Which addresses are internal (the monitored assets): ``alerts.internal_networks`` in the config."""

    def __init__(self, cidrs: tuple[str, ...] | list[str] = DEFAULT_INTERNAL) -> None:
        try:
            self.nets = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        except ValueError as exc:
            raise ValueError(f"internal network {exc}: expected CIDRs such as 10.0.0.0/8") from None
        self._cache: dict[str, bool] = {}

    def internal(self, addr) -> bool:
        """False for anything that is not an IP address (a card id, a terminal id, None)."""
        a = str(addr)
        hit = self._cache.get(a)
        if hit is None:
            try:
                ip = ipaddress.ip_address(a)
                hit = any(ip in n for n in self.nets if n.version == ip.version)
            except ValueError:
                hit = False
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[a] = hit
        return hit

    def inbound(self, src, dst) -> bool:
        """From an external to an internal address."""
        return (not self.internal(src)) and self.internal(dst)

    def direction(self, src, dst) -> str:
        """``inbound`` (external -> internal), ``outbound``, ``internal`` (east-west) or ``external``."""
        si, di = self.internal(src), self.internal(dst)
        return {(False, True): "inbound", (True, False): "outbound", (True, True): "internal"}.get((si, di), "external")
