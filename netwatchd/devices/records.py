"""Device-path kernel structures: the ctypes mirror of bpf/device.h and decoding (pure)."""
from __future__ import annotations

import ctypes
import ipaddress
import socket
from dataclasses import dataclass
from typing import Dict, Optional

from netwatchd.devices.model import DIRECTIONS, PROTOCOLS, mac_from_bytes

NPROTO = 8
SNIP_LEN = 1024

EV_NEW_DEVICE, EV_ADDRESS, EV_PATTERN, EV_SNIPPET = 1, 2, 3, 4
EVENT_KINDS = {EV_NEW_DEVICE: "new_device", EV_ADDRESS: "address", EV_PATTERN: "pattern", EV_SNIPPET: "snippet"}
APP_NAMES = {1: "dns", 2: "dhcp", 3: "http", 4: "tls"}
TRANSPORT_NAMES = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", socket.IPPROTO_ICMP: "icmp", 58: "icmpv6"}

# indexes of the runtime switches in the dev_settings array
SETTING_INDEX = {"capture_dns": 0, "capture_http": 1, "capture_tls": 2, "capture_dhcp": 3}
LOSS_RING, LOSS_DEVICES, LOSS_MALFORMED = 0, 1, 2


class DevCounters(ctypes.Structure):
    _fields_ = [
        ("packets", ctypes.c_uint64 * (2 * NPROTO)),  # [direction * NPROTO + protocol]
        ("bytes", ctypes.c_uint64 * (2 * NPROTO)),
        ("tcp_syns", ctypes.c_uint64),
        ("created_ns", ctypes.c_uint64),
        ("ifindex", ctypes.c_uint32),
        ("vlan", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
        ("last_pattern", ctypes.c_uint32),
        ("pad2", ctypes.c_uint32),
    ]


class BeaconKey(ctypes.Structure):
    """struct nw_beacon_key: a (device, peer, port) of the beacon_pairs LRU."""

    _fields_ = [("mac", ctypes.c_uint8 * 6), ("port", ctypes.c_uint16), ("family", ctypes.c_uint16),
                ("pad", ctypes.c_uint16), ("addr", ctypes.c_uint8 * 16)]


class BeaconStarts(ctypes.Structure):
    """struct nw_beacon_starts: that pair's last two connection starts and their count."""

    _fields_ = [("last_ns", ctypes.c_uint64), ("prev_ns", ctypes.c_uint64), ("count", ctypes.c_uint32),
                ("last_sport", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


def beacon_pair(key: BeaconKey):
    """(mac, peer address, port) of a beacon_pairs key."""
    return mac_from_bytes(bytes(key.mac)), _address(key.family, bytes(key.addr)), int(key.port)


class DevEvent(ctypes.Structure):
    _fields_ = [
        ("boot_ns", ctypes.c_uint64),
        ("ifindex", ctypes.c_uint32),
        ("kind", ctypes.c_uint8),
        ("app", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("transport", ctypes.c_uint8),
        ("mac", ctypes.c_uint8 * 6),
        ("peer_mac", ctypes.c_uint8 * 6),
        ("vlan", ctypes.c_uint16),
        ("family", ctypes.c_uint16),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("payload_len", ctypes.c_uint16),
        ("snap_len", ctypes.c_uint16),
        ("saddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
    ]


EVENT_SIZE = ctypes.sizeof(DevEvent)
SNIPPET_SIZE = EVENT_SIZE + SNIP_LEN


@dataclass(frozen=True)
class DeviceEvent:
    kind: str  # new_device | address | pattern | snippet
    timestamp_usec: int
    ifindex: int
    mac: str
    peer_mac: str
    vlan: int
    direction: str  # tx (sent by the device) | rx (sent to it)
    transport: str
    family: int
    saddr: str
    daddr: str
    sport: int
    dport: int
    app: str = ""
    payload: bytes = b""


class MalformedDeviceEvent(ValueError):
    """Bytes from the ring buffer that cannot be an event: counted, never fatal."""


def _address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return ""


def decode_device_event(raw: bytes, boot_to_realtime_ns: int) -> DeviceEvent:
    if len(raw) not in (EVENT_SIZE, SNIPPET_SIZE):
        raise MalformedDeviceEvent(f"event of {len(raw)} bytes, expected {EVENT_SIZE} or {SNIPPET_SIZE}")
    ev = DevEvent.from_buffer_copy(raw[:EVENT_SIZE])
    payload = b""
    if len(raw) == SNIPPET_SIZE:
        payload = raw[EVENT_SIZE : EVENT_SIZE + min(ev.snap_len, SNIP_LEN)]
    return DeviceEvent(
        kind=EVENT_KINDS.get(ev.kind, f"kind{ev.kind}"),
        timestamp_usec=(ev.boot_ns + boot_to_realtime_ns) // 1000,
        ifindex=ev.ifindex,
        mac=mac_from_bytes(bytes(ev.mac)),
        peer_mac=mac_from_bytes(bytes(ev.peer_mac)),
        vlan=ev.vlan,
        direction=DIRECTIONS[ev.direction & 1],
        transport=TRANSPORT_NAMES.get(ev.transport, str(ev.transport) if ev.transport else ""),
        family=ev.family,
        saddr=_address(ev.family, bytes(ev.saddr)),
        daddr=_address(ev.family, bytes(ev.daddr)),
        sport=ev.sport,
        dport=ev.dport,
        app=APP_NAMES.get(ev.app, ""),
        payload=payload,
    )


def sum_per_cpu(values) -> DevCounters:
    """One device's per-CPU counters added up; where it was first seen is taken from the CPU
    that saw it first (the others hold zeros there until they count it too)."""
    total = DevCounters()
    first = None
    for v in values:
        for i in range(2 * NPROTO):
            total.packets[i] += v.packets[i]
            total.bytes[i] += v.bytes[i]
        total.tcp_syns += v.tcp_syns
        if v.created_ns and (first is None or v.created_ns < first.created_ns):
            first = v
    if first is not None:
        total.created_ns, total.ifindex, total.vlan = first.created_ns, first.ifindex, first.vlan
    return total


def counters_dict(c: DevCounters) -> Dict[str, int]:
    """Kernel counters -> the names in netwatchd.devices.model.COUNTER_NAMES."""
    out: Dict[str, int] = {}
    for d, direction in enumerate(DIRECTIONS):
        for p, proto in enumerate(PROTOCOLS):
            out[f"{direction}_{proto}_packets"] = c.packets[d * NPROTO + p]
            out[f"{direction}_{proto}_bytes"] = c.bytes[d * NPROTO + p]
    out["tcp_syns"] = c.tcp_syns
    return out


def interface_name(ifindex: int) -> Optional[str]:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return None
