"""The behaviour definitions: one function per predicate, ``fn(ctx: WindowContext) -> float [E]`` in [0, 1].

Thresholds are fixed, documented constants taken from the usual operational definitions (e.g. a
horizontal scan starts at 5 distinct destinations), never fitted on labels; :func:`ramp` makes each a
soft threshold. A function's docstring is its user-facing description (see :mod:`.registry`).
"""
from __future__ import annotations

import numpy as np

from knowledge.predicates.context import WindowContext
from knowledge.predicates.kernels import _distinct, _group
from knowledge.predicates.ports import (
    ADMIN_PORTS,
    AMPLIFIER_PORTS,
    AUTH_PORTS,
    CLEARTEXT_PORTS,
    COMMON_PORTS,
    DB_PORTS,
    DNS_PORTS,
    FILE_TRANSFER_PORTS,
    IRC_PORTS,
    PROXY_PORTS,
    REMOTE_DESKTOP_PORTS,
    SERVICE_PORTS,
    SMB_PORTS,
    WEB_PORTS,
)


def ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, linear in between (a soft threshold)."""
    y = (x - lo) * (1.0 / (hi - lo)) if isinstance(x, np.ndarray) else (np.asarray(x, np.float64) - lo) * (1.0 / (hi - lo))
    return np.minimum(np.maximum(y, 0.0, out=y), 1.0, out=y)  # ufuncs directly: np.clip's wrapper is slower


def horizontal_scan(c: WindowContext) -> np.ndarray:
    """One source reaches >= 5 (full at 20) distinct destination hosts on the same destination port."""
    return ramp(c.distinct("src_port", c.dst), 4, 20)


def vertical_scan(c: WindowContext) -> np.ndarray:
    """One source reaches >= 5 (full at 20) distinct destination ports on one destination host."""
    return ramp(c.distinct("pair", c.port_code), 4, 20)


def port_spread(c: WindowContext) -> np.ndarray:
    """One source uses >= 10 (full at 50) distinct destination ports across all its destinations."""
    return ramp(c.distinct("src", c.port_code), 9, 50)


def fan_out(c: WindowContext) -> np.ndarray:
    """One source contacts >= 20 (full at 100) distinct destination hosts in the window, any port."""
    return ramp(c.distinct("src", c.dst), 19, 100)


def fan_in(c: WindowContext) -> np.ndarray:
    """One destination host is contacted by >= 10 (full at 50) distinct sources in the window."""
    g, k = c.group("dst")
    return ramp(_distinct(g, k, c.src)[g], 9, 50)


def failed_connection_ratio(c: WindowContext) -> np.ndarray:
    """Share of a source's flows that failed (no answer / refused), once it has >= 3 flows (full weight at 10)."""
    f = c.failed()
    ratio = c.mean("src", f.astype(np.float64))
    return ratio * ramp(c.count("src"), 2, 10)


def syn_only(c: WindowContext) -> np.ndarray:
    """TCP flow that never completed the handshake: Zeek state S0/SH/RSTOS0 or history ``S``, or
    SYN seen with no responder packets and no payload."""
    syn_no_reply = (np.nan_to_num(c.syn) > 0) & (c.dst_pkts <= 0) & (c.bytes <= 0)
    return (c.tcp & np.where(c.has_state, c.s0_state, syn_no_reply)).astype(np.float64)


def rejected_connection(c: WindowContext) -> np.ndarray:
    """TCP attempt refused by the responder: Zeek REJ/RSTOS0/RSTRH, or RST seen with no payload."""
    rst_empty = (np.nan_to_num(c.rst) > 0) & (c.bytes <= 0)
    return (c.tcp & np.where(c.has_state, c.rej_state, rst_empty)).astype(np.float64)


def zero_payload(c: WindowContext) -> np.ndarray:
    """TCP/UDP flow that carried no payload in either direction."""
    return ((c.tcp | c.udp) & (c.bytes <= 0)).astype(np.float64)


def small_packets(c: WindowContext) -> np.ndarray:
    """Flow whose mean IP packet size is small: full below 64 bytes/packet, none above 128. A flow with
    no packet and no byte counted (a bare attempt) counts as small."""
    empty = np.where((c.pkts <= 0) & (c.ip_bytes <= 0), 0.0, 1500.0)
    size = np.divide(c.ip_bytes, c.pkts, out=empty, where=c.pkts > 0)
    return 1.0 - ramp(size, 64, 128)


def flood(c: WindowContext) -> np.ndarray:
    """High rate of small-packet flows at one destination host: >= 10 (full at 100) such flows per second
    of window, where small = mean packet size <= 128 bytes."""
    small = small_packets(c) > 0
    rate = c.count("dst", small) / c.span
    return ramp(rate, 10, 100) * small


def request_burst(c: WindowContext) -> np.ndarray:
    """Many flows from one source to one destination service: >= 20 (full at 200) flows per (src, dst, port)."""
    return ramp(c.count("flow"), 19, 200)


def high_packet_rate(c: WindowContext) -> np.ndarray:
    """Flow sending >= 100 (full at 1000) packets per second."""
    rate = np.divide(c.pkts, c.duration, out=np.zeros(c.n), where=c.duration > 0.01)
    return ramp(rate, 100, 1000)


def amplification(c: WindowContext) -> np.ndarray:
    """UDP flow whose response is >= 5x (full at 20x) the request and at least 500 bytes."""
    ratio = np.divide(c.dst_ip_bytes, np.maximum(c.src_ip_bytes, 1.0))
    return c.udp * ramp(ratio, 5, 20) * (c.dst_ip_bytes >= 500)


def reflection_source_port(c: WindowContext) -> np.ndarray:
    """UDP flow from a well-known amplifier service port (DNS, NTP, SSDP, memcached, CharGEN...) to a
    high port with >= 500 bytes: what a reflected flood looks like at the victim."""
    return (c.udp & c.sport_in(AMPLIFIER_PORTS) & (c.dst_port >= 1024) & (c.src_ip_bytes >= 500)).astype(np.float64)


def udp_volume(c: WindowContext) -> np.ndarray:
    """One destination receives >= 10 (full at 100) UDP flows per second of window."""
    return c.udp * ramp(c.count("dst", c.udp) / c.span, 10, 100)


def beaconing(c: WindowContext) -> np.ndarray:
    """Periodic connections: a (src, dst, port) with >= 4 flows (full at 8) whose inter-arrival times have a
    coefficient of variation <= 0.1 (none above 0.5), i.e. low jitter, mean gap >= 1 s."""
    g, k = c.group("flow")
    # rows by group, then time: a quicksort on time, then a stable sort on the group (radix for <= 65536
    # groups). Rows of equal time may come in another order than np.lexsort((ts, g)) gives, but the
    # (group, time) sequence below, and so every gap, is the same.
    order = np.argsort(c.ts)
    order = order[np.argsort(g[order].astype(np.uint16) if k <= 65536 else g[order], kind="stable")]
    return _beacon_activation(g[order], c.ts[order], k)[g]


def _beacon_activation(gs: np.ndarray, ts: np.ndarray, k: int) -> np.ndarray:
    """Per group: the beaconing activation from its flows' times (``gs``/``ts`` ordered by group, then time)."""
    same = np.r_[False, gs[1:] == gs[:-1]]
    gap = np.r_[0.0, np.diff(ts)]
    w = same.astype(np.float64)
    n = np.bincount(gs, weights=w, minlength=k)
    s = np.bincount(gs, weights=gap * w, minlength=k)
    s2 = np.bincount(gs, weights=gap * gap * w, minlength=k)
    mean = np.divide(s, n, out=np.zeros(k), where=n > 0)
    var = np.maximum(np.divide(s2, n, out=np.zeros(k), where=n > 0) - mean ** 2, 0)
    cv = np.divide(np.sqrt(var), mean, out=np.full(k, np.inf), where=mean > 0)
    return ramp(n + 1, 3, 8) * (1.0 - ramp(cv, 0.1, 0.5)) * (mean >= 1.0)


def long_low_volume(c: WindowContext) -> np.ndarray:
    """Long session (>= 60 s, full at 600 s) carrying little data (<= 50 B/s full, none above 500 B/s)."""
    rate = np.divide(c.bytes, c.duration, out=np.zeros(c.n), where=c.duration > 0)
    return ramp(c.duration, 60, 600) * (1.0 - ramp(rate, 50, 500))


def slow_sessions(c: WindowContext) -> np.ndarray:
    """Several (>= 3, full at 10) concurrent slow TCP sessions from one source to one host: each >= 10 s
    with < 100 B/s, the pattern of connection-exhaustion DoS (slowloris, slow POST)."""
    rate = np.divide(c.bytes, c.duration, out=np.zeros(c.n), where=c.duration > 0)
    slow = c.tcp & (c.duration >= 10) & (rate < 100)
    return slow * ramp(c.count("pair", slow), 2, 10)


def large_outbound_transfer(c: WindowContext) -> np.ndarray:
    """Originator sends >= 1 MB (full at 10 MB) and at least 3x what it receives."""
    return ramp(c.src_bytes, 1e6, 1e7) * (c.src_bytes >= 3 * c.dst_bytes)


def outbound_asymmetry(c: WindowContext) -> np.ndarray:
    """Upload-heavy flow: >= 10 kB sent and sent/received ratio >= 5 (full at 50)."""
    ratio = c.src_bytes / np.maximum(c.dst_bytes, 1.0)
    return ramp(ratio, 5, 50) * (c.src_bytes >= 1e4)


def large_inbound_transfer(c: WindowContext) -> np.ndarray:
    """Originator downloads >= 100 kB (full at 5 MB) and receives at least 3x what it sends (tool transfer)."""
    return ramp(c.dst_bytes, 1e5, 5e6) * (c.dst_bytes >= 3 * c.src_bytes)


def external_upload_volume(c: WindowContext) -> np.ndarray:
    """Internal source sends >= 5 MB (full at 50 MB) in total to one external host over the window."""
    g, k = c.group("pair")
    tot = np.bincount(g, weights=c.src_bytes, minlength=k)[g]
    return ramp(tot, 5e6, 5e7) * (c.src_private & ~c.dst_private)


def brute_force(c: WindowContext) -> np.ndarray:
    """Repeated short sessions to one authentication service: >= 5 (full at 20) flows from one source to
    the same host and auth port (SSH, Telnet, FTP, RDP, SMB, SMTP/IMAP/POP, LDAP, Kerberos, VNC, WinRM,
    databases) with mean duration <= 10 s (none above 30 s)."""
    auth = c.dport_in(AUTH_PORTS)
    short = 1.0 - ramp(c.mean("flow", c.duration), 10, 30)
    return auth * ramp(c.count("flow"), 4, 20) * short


def password_spray(c: WindowContext) -> np.ndarray:
    """One source authenticates to >= 5 (full at 20) distinct hosts on the same auth port."""
    auth = c.dport_in(AUTH_PORTS)
    return auth * ramp(c.distinct("src_port", c.dst, auth), 4, 20)


def repeated_short_sessions(c: WindowContext) -> np.ndarray:
    """>= 10 (full at 50) flows on one (src, dst, port), mean duration <= 2 s (none above 10 s), any port."""
    short = 1.0 - ramp(c.mean("flow", c.duration), 2, 10)
    return ramp(c.count("flow"), 9, 50) * short


def auth_service(c: WindowContext) -> np.ndarray:
    """Flow to an authentication-bearing service port (SSH, Telnet, FTP, RDP, SMB, mail, LDAP, Kerberos...)."""
    return c.dport_in(AUTH_PORTS).astype(np.float64)


def lateral_admin(c: WindowContext) -> np.ndarray:
    """Internal -> internal flow on a remote-administration protocol (SMB, RDP, WinRM, SSH, RPC, VNC)
    that exchanged payload: the shape of lateral movement."""
    return (c.src_private & c.dst_private & c.dport_in(ADMIN_PORTS) & (c.bytes > 0)).astype(np.float64)


def internal_fan_out_admin(c: WindowContext) -> np.ndarray:
    """One internal source reaches >= 3 (full at 10) internal hosts on admin ports (SMB/RDP/WinRM/SSH)."""
    m = c.src_private & c.dst_private & c.dport_in(ADMIN_PORTS)
    return m * ramp(c.distinct("src", c.dst, m), 2, 10)


def smb_traffic(c: WindowContext) -> np.ndarray:
    """Flow to SMB/NetBIOS session service (TCP 139/445)."""
    return (c.tcp & c.dport_in(SMB_PORTS)).astype(np.float64)


def remote_desktop(c: WindowContext) -> np.ndarray:
    """Flow to a remote desktop service (RDP 3389, VNC 5900/5901)."""
    return c.dport_in(REMOTE_DESKTOP_PORTS).astype(np.float64)


def inbound_remote_service(c: WindowContext) -> np.ndarray:
    """External -> internal flow to a remote service (SSH, Telnet, RDP, VNC, SMB, WinRM)."""
    ports = np.array([22, 23, 445, 3389, 5900, 5985, 5986], dtype=np.int64)
    return (~c.src_private & c.dst_private & c.dport_in(ports)).astype(np.float64)


def nonstandard_port(c: WindowContext) -> np.ndarray:
    """Application protocol seen on a port that is not its standard one (e.g. HTTP on 4444, SSH on 2222).
    Needs a ``service`` label (Zeek, nDPI); 0 when unknown."""
    out = np.zeros(c.n, dtype=bool)
    for k, svc in enumerate(c.svc_values):  # loop over the window's few distinct service labels
        ports = SERVICE_PORTS.get(svc)
        if ports:
            out |= (c.svc_code == k) & ~c.dport_in(np.array(ports))
    return out.astype(np.float64)


def uncommon_port(c: WindowContext) -> np.ndarray:
    """TCP/UDP flow with payload both ways to a destination port >= 1024 that is not a common service port."""
    return ((c.tcp | c.udp) & (c.dst_port >= 1024) & ~c.dport_in(COMMON_PORTS)
            & (c.src_bytes > 0) & (c.dst_bytes > 0)).astype(np.float64)


def high_entropy_payload(c: WindowContext) -> np.ndarray:
    """Payload entropy >= 7.0 bits/byte (full at 7.6): encrypted or compressed content. 0 when unknown."""
    return ramp(np.nan_to_num(c.entropy, nan=0.0), 7.0, 7.6) * (c.bytes > 0)


def low_entropy_payload(c: WindowContext) -> np.ndarray:
    """Payload entropy <= 3 bits/byte (none above 4.5) on a flow with payload: plain or repetitive content."""
    e = np.where(np.isnan(c.entropy), 8.0, c.entropy)
    return (1.0 - ramp(e, 3.0, 4.5)) * (c.bytes > 0)


def icmp_sweep(c: WindowContext) -> np.ndarray:
    """One source sends ICMP to >= 5 (full at 20) distinct hosts (ping sweep)."""
    return c.icmp * ramp(c.distinct("src", c.dst, c.icmp), 4, 20)


def icmp_large_payload(c: WindowContext) -> np.ndarray:
    """ICMP flow with mean packet size >= 200 bytes (full at 1000): data carried inside ICMP."""
    size = np.divide(c.ip_bytes, c.pkts, out=np.zeros(c.n), where=c.pkts > 0)
    return c.icmp * ramp(size, 200, 1000)


def icmp_flood(c: WindowContext) -> np.ndarray:
    """One destination receives >= 10 (full at 100) ICMP flows per second of window."""
    return c.icmp * ramp(c.count("dst", c.icmp) / c.span, 10, 100)


def dns_query_volume(c: WindowContext) -> np.ndarray:
    """One source sends >= 50 (full at 300) DNS flows in the window."""
    dns = c.dport_in(DNS_PORTS) | c.service_is("dns")
    return dns * ramp(c.count("src", dns), 49, 300)


def dns_large_query(c: WindowContext) -> np.ndarray:
    """DNS flow whose request packets average >= 120 bytes (full at 250): long query names, the mark of
    data encoded in DNS (tunnelling)."""
    dns = c.dport_in(DNS_PORTS)
    size = np.divide(c.src_ip_bytes, c.src_pkts, out=np.zeros(c.n), where=c.src_pkts > 0)
    return dns * ramp(size, 120, 250)


def dns_external_resolver(c: WindowContext) -> np.ndarray:
    """Internal host sends DNS straight to an external server (bypassing the local resolver)."""
    return (c.dport_in(np.array([53, 853])) & c.src_private & ~c.dst_private).astype(np.float64)


def cleartext_protocol(c: WindowContext) -> np.ndarray:
    """Flow on a clear-text protocol that can carry credentials (FTP, Telnet, SMTP, HTTP, POP3, IMAP, SNMP, LDAP, rlogin)."""
    return c.dport_in(CLEARTEXT_PORTS).astype(np.float64)


def web_traffic(c: WindowContext) -> np.ndarray:
    """Flow to a web port (80, 443, 8000, 8080, 8443...) or labelled http/ssl."""
    svc = c.service_is("http", "ssl")
    return (c.dport_in(WEB_PORTS) | svc).astype(np.float64)


def proxy_port(c: WindowContext) -> np.ndarray:
    """Flow to a proxy / Tor port (SOCKS 1080, Squid 3128, Tor 9001/9030/9050/9150...)."""
    return c.dport_in(PROXY_PORTS).astype(np.float64)


def irc_port(c: WindowContext) -> np.ndarray:
    """Flow to IRC (194, 6660-6669, 6697), a classic botnet command channel."""
    return (c.dport_in(IRC_PORTS) | c.service_is("irc")).astype(np.float64)


def file_transfer_protocol(c: WindowContext) -> np.ndarray:
    """Flow on a file-transfer protocol (FTP 20/21, TFTP 69, SFTP 115, FTPS 989/990, NFS 2049)."""
    return c.dport_in(FILE_TRANSFER_PORTS).astype(np.float64)


def database_access(c: WindowContext) -> np.ndarray:
    """Flow to a database service port (MSSQL, Oracle, MySQL, PostgreSQL, Redis, Elasticsearch, MongoDB)."""
    return c.dport_in(DB_PORTS).astype(np.float64)


def outbound_external(c: WindowContext) -> np.ndarray:
    """Internal source talking to an external (public, non-multicast) destination."""
    return (c.src_private & ~c.dst_private & ~c.dst_multicast).astype(np.float64)


def inbound_external(c: WindowContext) -> np.ndarray:
    """External source reaching an internal destination (unsolicited inbound)."""
    return (~c.src_private & c.dst_private).astype(np.float64)


def internal_internal(c: WindowContext) -> np.ndarray:
    """Both endpoints in private address space."""
    return (c.src_private & c.dst_private).astype(np.float64)


def many_destinations_same_payload(c: WindowContext) -> np.ndarray:
    """One source sends the same request size (bytes) to >= 10 (full at 50) destinations: automated
    propagation or scanning with a fixed probe."""
    size = c.src_bytes.astype(np.int64)
    g, k = _group(c.group("src")[0], np.maximum(size, 0))
    return ramp(_distinct(g, k, c.dst)[g], 9, 50) * (c.src_bytes > 0)
