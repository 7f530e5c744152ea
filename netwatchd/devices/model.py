"""The device inventory (pure): what netwatchd knows about each device seen on the wire.

A device is a MAC address seen on a monitored interface. Its addresses come from ARP, NDP,
DHCP and the IP source of what it sends; its names from DHCP (hostname option) and DNS; its
application metadata from DNS questions, HTTP requests and TLS ClientHellos. Every collection
is bounded in entries and in bytes (the *_BYTES budgets below: about 8 KiB of text per device
at most), so memory and the inventory file stay flat however chatty -- or hostile -- a device is:
a device that sends 10000 names of 255 bytes keeps its newest few, not all of them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

# Per-device counters kept by the kernel, per direction (tx: sent by the device, rx: sent to it).
PROTOCOLS = ("arp", "ipv4", "ipv6", "tcp", "udp", "icmp", "icmpv6", "other")
DIRECTIONS = ("tx", "rx")
COUNTER_NAMES = tuple(
    f"{d}_{p}_{unit}" for d in DIRECTIONS for p in PROTOCOLS for unit in ("packets", "bytes")
) + ("tcp_syns",)  # connection attempts: SYN without ACK sent by the device

MAX_ADDRESSES = 32  # per family
MAX_NAMES = 64  # DNS names, HTTP hosts, TLS server names, each...
NAMES_BYTES = {"dns_names": 2048, "http_hosts": 1024, "tls_names": 1024}  # ...and at most these bytes
MAX_HTTP_REQUESTS = 16  # the most recent (method, host, path)...
HTTP_REQUESTS_BYTES = 2048  # ...in at most these bytes
MAX_RECENT_PEERS = 32  # the most recent first-seen patterns...
RECENT_PEERS_BYTES = 2048  # ...in at most these bytes (address + name)


def normalize_mac(mac: str) -> str:
    """'AA-BB-CC-dd-ee-ff' / 'aabb.ccdd.eeff' / 'aabbccddeeff' -> 'aa:bb:cc:dd:ee:ff'; ValueError otherwise."""
    digits = "".join(c for c in mac.lower() if c in "0123456789abcdef")
    stripped = mac.lower().replace(":", "").replace("-", "").replace(".", "")
    if len(digits) != 12 or digits != stripped:
        raise ValueError(f"not a MAC address: {mac!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def mac_from_bytes(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw[:6])


def bump_bounded(counts: Dict[str, int], key: str, max_keys: int, max_bytes: int) -> None:
    """Count `key`, newest last; the oldest keys make room while there are more than `max_keys`
    or their lengths add up to more than `max_bytes`. A key seen again moves to the end, so a
    flood of new names pushes out old ones, never the names a device keeps using."""
    counts[key] = counts.pop(key, 0) + 1
    if len(counts) > max_keys or sum(map(len, counts)) > max_bytes:
        total = sum(map(len, counts))
        while counts and (len(counts) > max_keys or total > max_bytes):
            oldest = next(iter(counts))
            total -= len(oldest)
            del counts[oldest]


def append_bounded(items: List[Any], item: Any, max_items: int, max_bytes: int, size: Callable[[Any], int]) -> None:
    """Append `item`; the oldest items go while there are more than `max_items` or their sizes
    add up to more than `max_bytes`."""
    items.append(item)
    total = sum(map(size, items))
    while items and (len(items) > max_items or total > max_bytes):
        total -= size(items.pop(0))


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
    # kept talking: frames sent in at least two ticks (netwatchd.devices.monitor). A MAC that
    # sent one forged frame never is; unconfirmed devices are evicted first when the inventory
    # is full, and expire sooner (devices.unconfirmed_expire_sec).
    confirmed: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Device":
        """A saved device, within today's bounds: an inventory written before them (256 names of
        255 bytes in each list) keeps its newest, and a device saved before `confirmed` existed
        is confirmed if it was seen at two different times."""
        known = {f.name for f in dataclasses.fields(cls)}
        device = cls(**{k: v for k, v in data.items() if k in known})
        if "confirmed" not in data:
            device.confirmed = device.last_seen_usec > device.first_seen_usec
        for name, budget in NAMES_BYTES.items():
            names = getattr(device, name)
            while names and (len(names) > MAX_NAMES or sum(map(len, names)) > budget):
                del names[next(iter(names))]
        while device.http_requests and (len(device.http_requests) > MAX_HTTP_REQUESTS or sum(
                sum(map(len, r.values())) for r in device.http_requests) > HTTP_REQUESTS_BYTES):
            device.http_requests.pop(0)
        while device.recent_peers and (len(device.recent_peers) > MAX_RECENT_PEERS or sum(
                len(p["address"]) + len(p["name"]) for p in device.recent_peers) > RECENT_PEERS_BYTES):
            device.recent_peers.pop(0)
        return device


def seen_by_ipv6_alone(device: Device) -> bool:
    """Whether all a device has shown of itself so far is IPv6: IPv6 or ICMPv6 frames (MLD, NDP
    on link-up) or an IPv6 address, and no ARP, IPv4 frame or IPv4 address. TCP and UDP frames
    are counted without their family (model.PROTOCOLS), so they say nothing either way."""
    c = device.counters
    ipv6 = bool(device.ipv6) or c.get("tx_ipv6_packets", 0) + c.get("tx_icmpv6_packets", 0) > 0
    ipv4 = bool(device.ipv4) or c.get("tx_arp_packets", 0) + c.get("tx_ipv4_packets", 0) + c.get("tx_icmp_packets", 0) > 0
    return ipv6 and not ipv4
