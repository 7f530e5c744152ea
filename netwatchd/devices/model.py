"""The device inventory (pure): what netwatchd knows about each device seen on the wire.

A device is a MAC address seen on a monitored interface. Its addresses come from ARP, NDP,
DHCP and the IP source of what it sends; its names from DHCP (hostname option) and DNS; its
application metadata from DNS questions, HTTP requests and TLS ClientHellos. Every collection
is bounded so memory stays flat however chatty a device is.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List

# Per-device counters kept by the kernel, per direction (tx: sent by the device, rx: sent to it).
PROTOCOLS = ("arp", "ipv4", "ipv6", "tcp", "udp", "icmp", "icmpv6", "other")
DIRECTIONS = ("tx", "rx")
COUNTER_NAMES = tuple(
    f"{d}_{p}_{unit}" for d in DIRECTIONS for p in PROTOCOLS for unit in ("packets", "bytes")
) + ("tcp_syns",)  # connection attempts: SYN without ACK sent by the device

MAX_ADDRESSES = 32  # per family
MAX_NAMES = 256  # DNS names, HTTP hosts, TLS server names, each
MAX_HTTP_REQUESTS = 32  # the most recent (method, host, path)
MAX_RECENT_PEERS = 64


def normalize_mac(mac: str) -> str:
    """'AA-BB-CC-dd-ee-ff' / 'aabb.ccdd.eeff' / 'aabbccddeeff' -> 'aa:bb:cc:dd:ee:ff'; ValueError otherwise."""
    digits = "".join(c for c in mac.lower() if c in "0123456789abcdef")
    stripped = mac.lower().replace(":", "").replace("-", "").replace(".", "")
    if len(digits) != 12 or digits != stripped:
        raise ValueError(f"not a MAC address: {mac!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def mac_from_bytes(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw[:6])


@dataclass
class Device:
    mac: str
    vendor: str = ""
    randomized: bool = False
    first_seen_usec: int = 0
    last_seen_usec: int = 0
    interface: str = ""
    vlan: int = 0
    hostname: str = ""
    hostname_source: str = ""  # dhcp | dns
    # address -> last seen (usec)
    ipv4: Dict[str, int] = field(default_factory=dict)
    ipv6: Dict[str, int] = field(default_factory=dict)
    counters: Dict[str, int] = field(default_factory=dict)
    # name -> times seen
    dns_names: Dict[str, int] = field(default_factory=dict)
    http_hosts: Dict[str, int] = field(default_factory=dict)
    tls_names: Dict[str, int] = field(default_factory=dict)
    http_requests: List[Dict[str, str]] = field(default_factory=list)
    peers: int = 0  # distinct (peer, port, transport) patterns seen
    # the most recent first-seen patterns: {"address", "port", "transport", "name"}
    recent_peers: List[Dict[str, Any]] = field(default_factory=list)
    dhcp_vendor_class: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Device":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
