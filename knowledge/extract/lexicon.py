"""Deterministic keyword/pattern rules over technique text and structured fields (the default backend).

Each predicate has a few regular expressions with a weight (how strongly that wording implies the
behaviour). A text's confidence for a predicate is the noisy-OR of the weights of the distinct rules
that match: ``1 - prod(1 - w)``. Structured fields add small priors (ATT&CK tactic), and a technique
with no network data component in its detection guidance is discounted (x0.8): its text may mention
a protocol without the behaviour being visible in flows. The evidence is the sentence holding the
strongest match. Rules were written from the wording of ATT&CK/CAPEC descriptions, not from any
labelled traffic.
"""
from __future__ import annotations

import re

from knowledge.extract.base import Link, TextItem
from knowledge.predicates import PREDICATES

# A rule is (pattern, weight) or (pattern, weight, veto): a match does not count when its sentence also
# matches ``veto`` (the wording is about something flows cannot show, e.g. cracking hashes offline);
# later matches of the same pattern are still tried.
R = list[tuple]

# "port scan", and the enumerations ATT&CK uses for it ("port, vulnerability, and/or wordlist scans").
PORT_SCAN = r"\bport(,? [\w/-]+){0,4} scan"
# "brute force" of captured hashes, tickets or ciphertext happens offline: nothing on the wire.
OFFLINE = r"off-?line|\bcrack|\bhash|cipher ?text|key space"
# "hide open ports" (port knocking) is about keeping a port closed, not about probing for open ones.
HIDDEN_PORTS = r"\bhid(e|es|ing|den)\b|knock"

RULES: dict[str, R] = {
    "horizontal_scan": [(r"\bscan(s|ning|ned)?\b", 0.4), (PORT_SCAN + r"|network scan|scanning ip|ip (block|range|address)e?s? ?scan|sweep", 0.6),
                        (r"sequential destination ip|multiple (hosts|systems|ip addresses)", 0.4)],
    "vertical_scan": [(PORT_SCAN + r"|service (probing|scan)|probe[sd]? .{0,30}ports?|listing of services", 0.6),
                      (r"open ports", 0.6, HIDDEN_PORTS),
                      (r"vulnerability scan", 0.5), (r"\bscan(s|ning)?\b", 0.3)],
    "port_spread": [(PORT_SCAN + r"|(many|multiple|range of) ports", 0.5), (r"open ports", 0.5, HIDDEN_PORTS),
                    (r"vulnerability scan", 0.4)],
    "fan_out": [(r"(many|multiple|numerous|large number of) (remote )?(hosts|systems|ip addresses|destinations)", 0.5),
                (r"sweep", 0.4), (r"\bworm|self-propagat|self-replicat", 0.5)],
    "fan_in": [(r"distributed denial|\bddos\b|botnet|many sources|multiple sources|distributed (network|systems)", 0.6)],
    "failed_connection_ratio": [(r"failed (connection|login|logon|authentication|attempt)s?", 0.5),
                                (r"connection (attempts|failures)|unreachable|refused", 0.4), (r"\bscan(s|ning)?\b", 0.3)],
    "syn_only": [(r"syn flood|\bsyn\b", 0.8), (r"half-open|three-way handshake|handshake", 0.5), (PORT_SCAN, 0.3)],
    "rejected_connection": [(r"\brst\b|tcp reset|refused|closed ports?", 0.5), (PORT_SCAN, 0.3)],
    "zero_payload": [(r"syn flood", 0.4), (PORT_SCAN + r"|probe", 0.3)],
    "small_packets": [(r"(syn|icmp|udp|packet) flood", 0.6), (r"\bflood", 0.3)],
    "flood": [(r"\bflood(s|ing|ed)?\b", 0.7), (r"denial of service|\bdos\b", 0.4),
              (r"volume of (network )?traffic|exhaust(ing|s)? (the )?(network )?bandwidth|saturat", 0.5)],
    "request_burst": [(r"(large|high|massive) (number|volume|rate|amount) of ([\w/-]+ ){0,2}(requests|connections)|flood of requests|repeated requests|many requests|request flood", 0.6),
                      (r"(high[- ]frequency|repetitive|excessive)[\w ,/-]{0,30} (requests|connections)", 0.5),
                      (r"exhaust", 0.3)],
    "high_packet_rate": [(r"\bflood", 0.5), (r"high (volume|rate) of (packets|traffic)|bandwidth", 0.5)],
    "amplification": [(r"amplif", 0.8), (r"reflect", 0.6), (r"spoofed source", 0.4)],
    "reflection_source_port": [(r"reflect", 0.8), (r"amplif", 0.5), (r"\b(ntp|memcached|ssdp|chargen|cldap)\b", 0.3)],
    "udp_volume": [(r"udp flood", 0.7), (r"\budp\b", 0.3), (r"\bflood", 0.3)],
    "beaconing": [(r"beacon", 0.8), (r"periodic|regular intervals|fixed intervals|at set intervals|heartbeat|jitter|scheduled (times|intervals|transfer)", 0.6),
                  (r"command and control|\bc2\b", 0.3)],
    "long_low_volume": [(r"long[- ]lived|persistent connection|low and slow|keep[- ]alive|long duration", 0.6), (r"tunnel", 0.3)],
    "slow_sessions": [(r"slowloris|slow (http|post|read)|keep (connections|sessions) open|partial (http )?requests", 0.7),
                      (r"exhaust(ing|s)? (the )?(available )?(connection|session|socket)s?", 0.6)],
    "large_outbound_transfer": [(r"exfiltrat", 0.6), (r"large (amounts?|volumes?) of data|\bbulk\b|upload(s|ed|ing)?\b", 0.4),
                                (r"data transfer", 0.3)],
    "outbound_asymmetry": [(r"exfiltrat", 0.5), (r"upload", 0.4), (r"send(s|ing)? (the )?(collected |stolen )?data", 0.4)],
    "large_inbound_transfer": [(r"transfer (tools|files)|download(s|ed|ing)?\b|ingress|copy files from an external", 0.6),
                               (r"\bpayloads?\b", 0.2)],
    "external_upload_volume": [(r"exfiltrat\w* .{0,40}(web service|cloud|external)|to (an )?external (location|server)|cloud storage", 0.6)],
    # "brute force" is often mentioned in passing (offline cracking of captured hashes); online guessing
    # against a service is what flows show, so the explicit phrases weigh more than the bare mention.
    "brute_force": [(r"brute[- ]?forc", 0.6, OFFLINE), (r"password guess|guess(es|ing)? (the )?passwords?|repeated (login|logon|authentication) attempts|credential stuffing|many (login|logon|authentication) attempts", 0.7),
                    (r"failed (login|logon|authentication)", 0.5)],
    "password_spray": [(r"spray", 0.8), (r"(many|multiple|different) (user )?accounts", 0.4)],
    "repeated_short_sessions": [(r"brute[- ]?forc|repeated (attempts|connections|login)|many (login|authentication) attempts", 0.5, OFFLINE),
                                (r"\bflood", 0.2)],
    "auth_service": [(r"\b(ssh|telnet|ftp|rdp|smb|ldap|kerberos|vnc|winrm|imap|pop3|smtp|mssql|mysql)\b", 0.5),
                     (r"authenticat|\blog ?in\b|logon|credential", 0.3)],
    "lateral_admin": [(r"lateral(ly)? mov|move laterally|remote services?|admin(istrative)? shares|pivot", 0.6),
                      (r"\b(smb|rdp|winrm|ssh|psexec|dcom|rpc)\b", 0.4)],
    "internal_fan_out_admin": [(r"admin(istrative)? shares|self-propagat|\bworm|spread(s|ing)? to", 0.5), (r"lateral", 0.4)],
    "smb_traffic": [(r"\bsmb\b|server message block|admin\$|\bc\$|network shares?|netbios|\bcifs\b", 0.8)],
    "remote_desktop": [(r"remote desktop|\brdp\b|\bvnc\b|3389", 0.8)],
    "inbound_remote_service": [(r"external(ly)? (facing|remote) services?|\bvpn\b|citrix|internet[- ]facing|external remote", 0.6),
                               (r"remote (access|desktop|services)", 0.3)],
    "nonstandard_port": [(r"non-?standard port|port-protocol mismatch|uncommon port|unusual port|arbitrary port", 0.8)],
    "uncommon_port": [(r"non-?standard port|uncommon|unusual port|high(er)? port|arbitrary port|custom port", 0.6)],
    "high_entropy_payload": [(r"encrypt|\bssl\b|\btls\b|cipher", 0.5), (r"entropy", 0.6), (r"obfuscat|compress", 0.3)],
    "low_entropy_payload": [(r"plain ?text|clear[- ]?text|unencrypted", 0.5)],
    "icmp_sweep": [(r"ping sweep|icmp (echo|sweep|scan)|\bping(s|ing)?\b", 0.7), (r"\bicmp\b", 0.4)],
    "icmp_large_payload": [(r"\bicmp\b", 0.5), (r"tunnel|covert|non-application layer", 0.4)],
    "icmp_flood": [(r"icmp flood|ping flood|smurf", 0.8), (r"\bicmp\b", 0.3), (r"\bflood", 0.3)],
    "dns_query_volume": [(r"\bdns\b", 0.4), (r"domain generation|\bdga\b|fast flux|large number of dns|dns (queries|requests)", 0.5)],
    "dns_large_query": [(r"dns tunnel|tunnel\w* (over|via|through) dns|encoded (in|into) (dns|subdomain)|subdomain", 0.7), (r"\bdns\b", 0.3)],
    "dns_external_resolver": [(r"(external|public|alternate|attacker[- ]controlled) (dns|resolver|name server)|dns over https|\bdoh\b", 0.6),
                              (r"\bdns\b", 0.3)],
    "cleartext_protocol": [(r"clear[- ]?text|plain ?text|unencrypted", 0.5), (r"\b(telnet|ftp|snmp|http)\b", 0.3), (r"sniff", 0.5)],
    "web_traffic": [(r"\bhttps?\b|web (protocol|traffic|service|server|request|shell)s?|website|\burls?\b|browser", 0.6)],
    # not "relay": in ATT&CK it is mostly NTLM/SMB relay, which is not a proxy port
    "proxy_port": [(r"proxy|\btor\b|onion|socks", 0.7), (r"multi-hop", 0.5)],
    "irc_port": [(r"\birc\b|internet relay chat", 0.9)],
    "file_transfer_protocol": [(r"\bftp\b|\btftp\b|\bsftp\b|file transfer protocol|\bnfs\b", 0.8), (r"file transfer", 0.4)],
    "database_access": [(r"database|\bsql\b|mysql|postgres|mongodb|redis|elasticsearch", 0.5)],
    "outbound_external": [(r"command and control|\bc2\b|exfiltrat|external (server|host|site|location)|adversary[- ]controlled", 0.4)],
    "inbound_external": [(r"public[- ]facing|internet[- ]facing|external(ly)?[- ]facing|from the internet|exposed to the internet|inbound", 0.6)],
    "internal_internal": [(r"internal (network|host|system)s?|lateral|within (the|a) (network|environment)", 0.4)],
    "many_destinations_same_payload": [(r"\bworm|self-propagat|spread(s|ing)? to", 0.5), (r"\bscan(s|ning)?\b", 0.3)],
}

# Priors from the ATT&CK tactic a technique belongs to (weak: they only add to text evidence).
TACTIC_PRIORS: dict[str, dict[str, float]] = {
    "command-and-control": {"beaconing": 0.2, "outbound_external": 0.3},
    "exfiltration": {"outbound_asymmetry": 0.3, "large_outbound_transfer": 0.3},
    "lateral-movement": {"lateral_admin": 0.3, "internal_internal": 0.3},
    "impact": {"flood": 0.1},
    "reconnaissance": {"inbound_external": 0.2},
    "initial-access": {"inbound_external": 0.2},
}

# A match in the technique's name is strong evidence; in detection guidance (which mostly describes
# host logs around the behaviour) it is weaker than in the description.
NAME_FACTOR = 1.3
DETECTION_FACTOR = 0.6
_BOUNDARY = re.compile(r"[.!?]\s|\n")


def _sentence(text: str, pos: int) -> str:
    """The sentence of ``text`` around offset ``pos``."""
    start = max((m.end() for m in _BOUNDARY.finditer(text, 0, pos)), default=0)
    m = _BOUNDARY.search(text, pos)
    return " ".join(text[start:m.start() + 1 if m else len(text)].split())


def _first_match(rx: re.Pattern, veto: re.Pattern | None, text: str) -> str | None:
    """The sentence of the first match of ``rx`` in ``text`` whose sentence ``veto`` does not match."""
    if not text:
        return None
    for m in rx.finditer(text):
        sent = _sentence(text, m.start())
        if veto is None or not veto.search(sent):
            return sent
    return None


class LexiconExtractor:
    """Rule-based extractor; deterministic and dependency-free."""

    name = "lexicon"

    def __init__(self, min_confidence: float = 0.3, non_network_discount: float = 0.8):
        self.min_confidence = min_confidence
        self.discount = non_network_discount
        self._rules = {p: [(re.compile(r[0], re.I), r[1], re.compile(r[2], re.I) if len(r) > 2 else None) for r in rs]
                       for p, rs in RULES.items() if p in PREDICATES}

    def score(self, item: TextItem) -> dict[str, tuple[float, str]]:
        """Predicate -> (confidence, evidence sentence) for one text."""
        sections = [(item.name, NAME_FACTOR), (item.text, 1.0), (item.detection, DETECTION_FACTOR)]
        out: dict[str, tuple[float, str]] = {}
        for pred, rules in self._rules.items():
            keep, best_w, evidence = 1.0, 0.0, ""
            for rx, w, veto in rules:
                # A rule counts once, at the first section (in order name, description, detection) where
                # it matches outside a vetoed sentence.
                for text, factor in sections:
                    sent = _first_match(rx, veto, text)
                    if sent is not None:
                        we = min(0.95, w * factor)
                        keep *= 1.0 - we
                        if we > best_w:
                            best_w, evidence = we, sent
                        break
            for tac in item.tactics:
                w = TACTIC_PRIORS.get(tac, {}).get(pred, 0.0)
                if w and keep < 1.0:  # a prior only strengthens existing text evidence
                    keep *= 1.0 - w
            conf = 1.0 - keep
            if item.id.startswith("attack:") and not item.network:
                conf *= self.discount
            if conf >= self.min_confidence:
                out[pred] = (round(conf, 4), evidence[:300])
        return out

    def extract(self, items: list[TextItem]) -> list[Link]:
        links = []
        for it in items:
            for pred, (conf, ev) in self.score(it).items():
                p = PREDICATES[pred]
                links.append(Link(it.id, pred, conf, ev, self.name, p.protocols, p.ports))
        return links
