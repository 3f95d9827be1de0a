"""Port roles, connection states and address classes the predicate definitions refer to.

Ports are grouped by role; sources: the IANA registry and the services named in ATT&CK technique text.
"""
from __future__ import annotations

import numpy as np

AUTH_PORTS = np.array([21, 22, 23, 25, 88, 110, 139, 143, 389, 445, 465, 513, 587, 636, 993, 995,
                       1433, 1521, 3306, 3389, 5432, 5900, 5985, 5986], dtype=np.int64)
ADMIN_PORTS = np.array([22, 135, 139, 445, 3389, 5900, 5985, 5986], dtype=np.int64)  # SSH/RPC/SMB/RDP/VNC/WinRM
SMB_PORTS = np.array([139, 445], dtype=np.int64)
REMOTE_DESKTOP_PORTS = np.array([3389, 5900, 5901], dtype=np.int64)
WEB_PORTS = np.array([80, 443, 8000, 8008, 8080, 8443, 8888], dtype=np.int64)
DNS_PORTS = np.array([53, 5353, 853], dtype=np.int64)
AMPLIFIER_PORTS = np.array([17, 19, 53, 111, 123, 137, 161, 389, 1900, 3702, 5353, 11211], dtype=np.int64)
CLEARTEXT_PORTS = np.array([21, 23, 25, 80, 110, 143, 161, 389, 513, 514], dtype=np.int64)
PROXY_PORTS = np.array([1080, 3128, 8118, 9001, 9030, 9050, 9051, 9150], dtype=np.int64)
IRC_PORTS = np.array([194, 6660, 6661, 6662, 6663, 6664, 6665, 6666, 6667, 6668, 6669, 6697], dtype=np.int64)
FILE_TRANSFER_PORTS = np.array([20, 21, 69, 115, 989, 990, 2049], dtype=np.int64)
DB_PORTS = np.array([1433, 1521, 3306, 5432, 6379, 9200, 27017], dtype=np.int64)
MAIL_PORTS = np.array([25, 110, 143, 465, 587, 993, 995], dtype=np.int64)
# Ports a well-behaved service is expected on; anything >= 1024 not here is "uncommon".
COMMON_PORTS = np.unique(np.concatenate([
    AUTH_PORTS, WEB_PORTS, DNS_PORTS, AMPLIFIER_PORTS, MAIL_PORTS, DB_PORTS,
    np.array([67, 68, 69, 5060, 5061, 1194, 500, 4500, 1723, 3478, 5222, 5223, 8883, 1883], dtype=np.int64)]))
# Standard ports per application protocol (Zeek ``service`` names).
SERVICE_PORTS: dict[str, tuple[int, ...]] = {
    "http": (80, 8000, 8008, 8080, 8888, 3128), "ssl": (443, 8443, 993, 995, 465, 636, 853, 5986, 990),
    "ssh": (22,), "dns": (53, 5353, 853), "ftp": (21,), "ftp-data": (20,), "smtp": (25, 465, 587),
    "rdp": (3389,), "smb": (139, 445), "dhcp": (67, 68), "ntp": (123,), "irc": tuple(int(p) for p in IRC_PORTS),
    "telnet": (23,), "snmp": (161, 162), "krb": (88,), "ldap": (389, 636), "mysql": (3306,),
}
FAILED_STATES = np.array(["S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"], dtype=object)
PRIVATE_RE = r"^(10\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|127\.|169\.254\.|[fF][cCdD][0-9a-fA-F]{2}:|[fF][eE]80:|::1$)"
MULTICAST_RE = r"^(22[4-9]\.|23[0-9]\.|255\.255\.255\.255$|[fF][fF][0-9a-fA-F]{2}:)"
