"""The table of predicates: :data:`PREDICATES` (name -> :class:`Predicate`) with each one's scope,
protocol/port hints and family tags (scan, dos, c2, exfil, bruteforce, lateral, ...).

The registry's order fixes the feature columns; its ``description`` strings (the definitions'
docstrings) are what the text extractors (embedding, llm) see.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import knowledge.predicates.definitions as d
from knowledge.predicates.context import WindowContext
from knowledge.predicates.ports import (
    ADMIN_PORTS,
    AMPLIFIER_PORTS,
    AUTH_PORTS,
    CLEARTEXT_PORTS,
    DB_PORTS,
    DNS_PORTS,
    FILE_TRANSFER_PORTS,
    IRC_PORTS,
    PROXY_PORTS,
    REMOTE_DESKTOP_PORTS,
    SMB_PORTS,
    WEB_PORTS,
)

__all__ = ["Predicate", "PREDICATES", "PREDICATE_NAMES", "VOCAB_VERSION"]

# Tag "context": a fact about a single flow (its port, direction, handshake outcome) that is common in
# benign traffic too; such predicates count less in technique scores than behaviours over groups of flows.
# Bumped whenever a predicate is added, removed or its definition changes.
VOCAB_VERSION = "1"


@dataclass(frozen=True)
class Predicate:
    """One network-observable behaviour.

    ``fn(ctx) -> float [E]`` in [0, 1]. ``scope`` says which group the value is computed over
    (``flow`` = the record alone). ``description`` is the definition shown to users and to the
    text extractors; ``protocols`` / ``ports`` are hints stored with extracted links.
    """

    name: str
    description: str
    scope: str
    fn: Callable[[WindowContext], np.ndarray]
    protocols: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)


PREDICATES: dict[str, Predicate] = {}


def _reg(fn: Callable, scope: str, protocols: tuple[str, ...] = (), ports=(), tags: tuple[str, ...] = ()) -> None:
    doc = " ".join((fn.__doc__ or "").split())
    PREDICATES[fn.__name__] = Predicate(fn.__name__, doc, scope, fn, protocols,
                                        tuple(int(p) for p in ports), tags)


_reg(d.horizontal_scan, "src,dst_port", ("tcp", "udp"), tags=("scan",))
_reg(d.vertical_scan, "src,dst", ("tcp", "udp"), tags=("scan",))
_reg(d.port_spread, "src", ("tcp", "udp"), tags=("scan",))
_reg(d.fan_out, "src", tags=("scan", "spread"))
_reg(d.fan_in, "dst", tags=("dos",))
_reg(d.failed_connection_ratio, "src", ("tcp",), tags=("scan",))
_reg(d.syn_only, "flow", ("tcp",), tags=("scan", "dos", "context"))
_reg(d.rejected_connection, "flow", ("tcp",), tags=("scan", "context"))
_reg(d.zero_payload, "flow", ("tcp", "udp"), tags=("context",))
_reg(d.small_packets, "flow", tags=("dos", "context"))
_reg(d.flood, "dst", tags=("dos",))
_reg(d.request_burst, "src,dst,dst_port", tags=("dos", "bruteforce"))
_reg(d.high_packet_rate, "flow", tags=("dos",))
_reg(d.amplification, "flow", ("udp",), AMPLIFIER_PORTS, tags=("dos",))
_reg(d.reflection_source_port, "flow", ("udp",), AMPLIFIER_PORTS, tags=("dos",))
_reg(d.udp_volume, "dst", ("udp",), tags=("dos",))
_reg(d.beaconing, "src,dst,dst_port", tags=("c2",))
_reg(d.long_low_volume, "flow", tags=("c2",))
_reg(d.slow_sessions, "src,dst", ("tcp",), WEB_PORTS, tags=("dos",))
_reg(d.large_outbound_transfer, "flow", tags=("exfil",))
_reg(d.outbound_asymmetry, "flow", tags=("exfil",))
_reg(d.large_inbound_transfer, "flow", tags=("transfer",))
_reg(d.external_upload_volume, "src,dst", tags=("exfil",))
_reg(d.brute_force, "src,dst,dst_port", ("tcp",), AUTH_PORTS, tags=("bruteforce",))
_reg(d.password_spray, "src,dst_port", ("tcp",), AUTH_PORTS, tags=("bruteforce",))
_reg(d.repeated_short_sessions, "src,dst,dst_port", tags=("bruteforce", "dos"))
_reg(d.auth_service, "flow", ("tcp",), AUTH_PORTS, tags=("context",))
# lateral_admin / inbound_remote_service are single-flow facts of port and direction that every legitimate
# admin or VPN session fires; ATT&CK defines their techniques (T1021 Remote Services, T1133 External Remote
# Services) by the use of valid accounts, which a flow cannot show. So they are context: they sharpen
# behaviour evidence (admin fan-out, brute force) but cannot name a technique alone.
_reg(d.lateral_admin, "flow", ("tcp",), ADMIN_PORTS, tags=("lateral", "context"))
_reg(d.internal_fan_out_admin, "src", ("tcp",), ADMIN_PORTS, tags=("lateral",))
_reg(d.smb_traffic, "flow", ("tcp",), SMB_PORTS, tags=("context",))
_reg(d.remote_desktop, "flow", ("tcp",), REMOTE_DESKTOP_PORTS, tags=("context",))
_reg(d.inbound_remote_service, "flow", ("tcp",), (22, 23, 445, 3389, 5900, 5985, 5986), tags=("access", "context"))
_reg(d.nonstandard_port, "flow", tags=("c2",))
_reg(d.uncommon_port, "flow", tags=("c2",))
_reg(d.high_entropy_payload, "flow", tags=("c2", "exfil"))
_reg(d.low_entropy_payload, "flow", tags=("context",))
_reg(d.icmp_sweep, "src", ("icmp",), tags=("scan",))
_reg(d.icmp_large_payload, "flow", ("icmp",), tags=("c2", "exfil"))
_reg(d.icmp_flood, "dst", ("icmp",), tags=("dos",))
_reg(d.dns_query_volume, "src", ("udp", "dns"), DNS_PORTS, tags=("c2",))
_reg(d.dns_large_query, "flow", ("udp", "dns"), DNS_PORTS, tags=("c2", "exfil"))
_reg(d.dns_external_resolver, "flow", ("udp", "dns"), (53, 853), tags=("c2",))
_reg(d.cleartext_protocol, "flow", ports=CLEARTEXT_PORTS, tags=("context",))
_reg(d.web_traffic, "flow", ("tcp", "http", "ssl"), WEB_PORTS, tags=("context",))
_reg(d.proxy_port, "flow", ("tcp",), PROXY_PORTS, tags=("c2",))
_reg(d.irc_port, "flow", ("tcp", "irc"), IRC_PORTS, tags=("c2",))
_reg(d.file_transfer_protocol, "flow", ("tcp", "udp"), FILE_TRANSFER_PORTS, tags=("transfer", "context"))
_reg(d.database_access, "flow", ("tcp",), DB_PORTS, tags=("context",))
_reg(d.outbound_external, "flow", tags=("context",))
_reg(d.inbound_external, "flow", tags=("context",))
_reg(d.internal_internal, "flow", tags=("context",))
_reg(d.many_destinations_same_payload, "src,src_bytes", tags=("scan", "spread"))

PREDICATE_NAMES: tuple[str, ...] = tuple(PREDICATES)
