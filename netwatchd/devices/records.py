"""Device-path kernel structures: the ctypes mirror of bpf/device.h and decoding (pure but for
interface_name, which asks the kernel for an interface's name: DeviceMonitor's default if_name)."""
from __future__ import annotations

import ctypes
import ipaddress
import socket
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from netwatchd.devices.model import DIRECTIONS, mac_from_bytes

NPROTO = 8
SNIP_LEN = 1024

EV_NEW_DEVICE, EV_ADDRESS, EV_PATTERN, EV_SNIPPET = 1, 2, 3, 4
EVENT_KINDS = {EV_NEW_DEVICE: "new_device", EV_ADDRESS: "address", EV_PATTERN: "pattern", EV_SNIPPET: "snippet"}
APP_NAMES = {1: "dns", 2: "dhcp", 3: "http", 4: "tls"}
NW_T_ARP = 254  # bpf/device.h: the targets of ARP requests, reported as patterns of this transport
TRANSPORT_NAMES = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", socket.IPPROTO_ICMP: "icmp", 58: "icmpv6",
                   NW_T_ARP: "arp"}

# indexes of the runtime switches in the dev_settings array
SETTING_INDEX = {"capture_dns": 0, "capture_http": 1, "capture_tls": 2, "capture_dhcp": 3}
LOSS_RING, LOSS_DEVICES, LOSS_MALFORMED, LOSS_THROTTLED = 0, 1, 2, 3


class DeviceLosses(NamedTuple):
    """The kernel's loss counters (bpf/device.h NW_LOSS_*): DeviceProbe.losses(), as
    netwatchd.connects.records.ConnectLosses is the connect probe's."""

    ring_full: int = 0  # records that found the ring buffer full
    devices_full: int = 0  # packets of devices that found no room in the device map
    malformed: int = 0  # frames too short or inconsistent to parse
    throttled: int = 0  # snippets of a device beyond its budget (devices.snippet_budget_per_sec)


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
        ("snippet_budget", ctypes.c_uint32),
        ("budget_ns", ctypes.c_uint64),
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


# The same struct as a numpy dtype, so a whole map read (every device, every CPU) is decoded and
# added up in a few array operations, not one Python object per device and CPU.
COUNTERS_DTYPE = np.dtype({"names": [name for name, _ in DevCounters._fields_],
                           "formats": [("<u8", (2 * NPROTO,)), ("<u8", (2 * NPROTO,)), "<u8", "<u8", "<u4", "<u2",
                                       "<u2", "<u4", "<u4", "<u8"],
                           "offsets": [getattr(DevCounters, name).offset for name, _ in DevCounters._fields_],
                           "itemsize": ctypes.sizeof(DevCounters)})
MAC_KEY_SIZE = 8  # struct nw_mac: 6 bytes and 2 of padding
NO_TIME = np.iinfo(np.uint64).max


@dataclass
class CounterReadings:
    """One read of the kernel's device map: per device (row), its MAC as an integer, its
    cumulative counters in COUNTER_NAMES order (summed over CPUs), and its entry's creation
    time, interface and VLAN (from the CPU that saw it first)."""

    macs: np.ndarray  # uint64
    counters: np.ndarray  # (n, len(COUNTER_NAMES)) uint64
    created_ns: np.ndarray  # uint64
    ifindex: np.ndarray  # uint32
    vlan: np.ndarray  # uint16

    def __len__(self) -> int:
        return len(self.macs)


def mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def mac_text(value: int) -> str:
    digits = f"{value:012x}"
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def readings_from_raw(keys: bytes, values: bytes, n: int, cpus: int) -> CounterReadings:
    """Readings from a batch read's raw buffers: `n` keys (struct nw_mac) and `n` x `cpus`
    values (struct nw_dev_counters, one per possible CPU, as the kernel lays out per-CPU maps)."""
    raw_keys = np.frombuffer(keys, dtype=np.uint8, count=n * MAC_KEY_SIZE).reshape(n, MAC_KEY_SIZE)[:, :6]
    macs = np.zeros(n, dtype=np.uint64)
    for byte in range(6):  # big-endian: the MAC as written, aa:bb:... -> 0xaabb...
        macs = (macs << np.uint64(8)) | raw_keys[:, byte].astype(np.uint64)
    per_cpu = np.frombuffer(values, dtype=COUNTERS_DTYPE, count=n * cpus).reshape(n, cpus)
    packets = per_cpu["packets"].sum(axis=1, dtype=np.uint64)
    sizes = per_cpu["bytes"].sum(axis=1, dtype=np.uint64)
    counters = np.concatenate([np.stack([packets, sizes], axis=2).reshape(n, 4 * NPROTO),
                               per_cpu["tcp_syns"].sum(axis=1, dtype=np.uint64)[:, None]], axis=1)
    created = np.where(per_cpu["created_ns"] == 0, NO_TIME, per_cpu["created_ns"])
    first = created.argmin(axis=1) if cpus else np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    first_created = created[rows, first]
    return CounterReadings(macs, counters, np.where(first_created == NO_TIME, 0, first_created).astype(np.uint64),
                           per_cpu["ifindex"][rows, first].astype(np.uint32), per_cpu["vlan"][rows, first].astype(np.uint16))


IP_KEY_SIZE, OWNER_SIZE = 20, 8  # struct nw_ip_key (family, pad, addr[16]) and struct nw_mac


def address_bindings(keys: bytes, values: bytes, n: int) -> List[Tuple[str, str]]:
    """(address, MAC) pairs from a batch read of the ip_owner map's raw buffers."""
    raw_keys = np.frombuffer(keys, dtype=np.uint8, count=n * IP_KEY_SIZE).reshape(n, IP_KEY_SIZE)
    raw_macs = np.frombuffer(values, dtype=np.uint8, count=n * OWNER_SIZE).reshape(n, OWNER_SIZE)
    families = raw_keys[:, 0].astype(np.uint16) | (raw_keys[:, 1].astype(np.uint16) << 8)
    out = []
    for family, key, mac in zip(families.tolist(), raw_keys, raw_macs):
        address = _address(family, key[4:].tobytes())
        if address:
            out.append((address, mac_from_bytes(mac.tobytes())))
    return out


def readings_from_counters(devices: Dict[str, "DevCounters"]) -> CounterReadings:
    """Readings from already-summed counters by MAC (one CPU's worth each): for fakes and tests."""
    keys = b"".join(bytes.fromhex(mac.replace(":", "")) + b"\0\0" for mac in devices)
    values = b"".join(bytes(c) for c in devices.values())
    return readings_from_raw(keys, values, len(devices), 1)


def interface_name(ifindex: int) -> Optional[str]:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return None
