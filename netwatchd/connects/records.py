"""Per-connect records: the ctypes mirror of bpf/connect.h and their decoding (pure).

The kernel sends raw `struct nw_conn_event` bytes; `decode_event` turns them into a
ConnectionRecord with names a person reads (family, transport, destination, errno name).
"""
from __future__ import annotations

import ctypes
import errno
import functools
import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from typing import List, NamedTuple

import numpy as np

from netwatchd.text import printable

COMM_LEN = 16
PATH_LEN = 108  # sizeof(sun_path)

KIND_CONNECT = 1
KIND_UDP_SEND = 2
KIND_HANDSHAKE_END = 3
KIND_NAMES = {KIND_CONNECT: "connect", KIND_UDP_SEND: "udp_send", KIND_HANDSHAKE_END: "handshake_end"}

# bpf/connect.h NW_OUT_*: the outcome of a connect(), as Summary counts it and records say it.
OUTCOME_NAMES = {1: "succeeded", 2: "refused", 3: "timed_out", 4: "other_failed", 5: "in_progress",
                 6: "unknown", 7: "sent"}
FAILED_OUTCOMES = ("refused", "timed_out", "other_failed")

TRANSPORT_NAMES = {0: "unknown", 1: "tcp", 2: "udp", 3: "other"}
FAMILY_NAMES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix", 0: "unspec"}


class KernelCounts(ctypes.Structure):
    """struct nw_counts."""

    _fields_ = [
        ("succeeded", ctypes.c_uint64),
        ("refused", ctypes.c_uint64),
        ("timed_out", ctypes.c_uint64),
        ("other_failed", ctypes.c_uint64),
        ("unknown", ctypes.c_uint64),
        ("udp_sends", ctypes.c_uint64),
    ]


class ProcEntry(ctypes.Structure):
    """struct nw_proc_entry: the value of proc_counts (key tgid) and of retired_counts."""

    _fields_ = [("comm", ctypes.c_char * COMM_LEN), ("gen", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("counts", KernelCounts)]


class ConnEvent(ctypes.Structure):
    """struct nw_conn_event; a unix record (struct nw_conn_event_long) appends PATH_LEN bytes."""

    _fields_ = [
        ("boot_ns", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("ret", ctypes.c_int32),
        ("family", ctypes.c_uint16),
        ("port", ctypes.c_uint16),
        ("kind", ctypes.c_uint8),
        ("transport", ctypes.c_uint8),
        ("path_len", ctypes.c_uint8),
        ("outcome", ctypes.c_uint8),
        ("comm", ctypes.c_char * COMM_LEN),
        ("addr", ctypes.c_uint8 * 16),
        ("syn_ns", ctypes.c_uint64),
        ("latency_usec", ctypes.c_uint32),
        ("end_err", ctypes.c_int32),
    ]


class ConnEventLong(ctypes.Structure):
    _fields_ = [("ev", ConnEvent), ("path", ctypes.c_char * PATH_LEN)]


def _dtype_of(fields) -> np.dtype:
    """The numpy row of a ctypes mirror, derived from its fields like _struct_of below: the record
    path decodes a whole ring of them at once (netwatchd/kernel/mapped_ring.py)."""
    codes = {ctypes.c_uint64: "<u8", ctypes.c_uint32: "<u4", ctypes.c_int32: "<i4", ctypes.c_uint16: "<u2",
             ctypes.c_uint8: "u1"}
    return np.dtype([(name, f"V{ctypes.sizeof(ctype)}" if name == "addr" else
                      f"S{ctypes.sizeof(ctype)}" if hasattr(ctype, "_length_") else codes[ctype])
                     for name, ctype in fields])


EVENT_SIZE = ctypes.sizeof(ConnEvent)
EVENT_DTYPE = _dtype_of(ConnEvent._fields_)
assert EVENT_DTYPE.itemsize == EVENT_SIZE
LONG_EVENT_SIZE = ctypes.sizeof(ConnEventLong)  # padded to 8 bytes, as the C compiler does


# -- what the probe hands over besides records ------------------------------------------------
class ConnectLosses(NamedTuple):
    """The kernel's loss counters (bpf/connect.bpf.c NW_LOSS_*, in their order): ConnectProbe.losses(),
    as netwatchd.devices.records.DeviceLosses is the device probe's."""

    ring_full: int = 0  # records that found their ring full (a flow's first: the reserve too)
    processes: int = 0  # processes that found the counter map full
    handshakes: int = 0  # handshakes that found the handshake map full (their outcome: unknown)
    late_ends: int = 0  # handshake ends whose process counters were already freed
    latency: int = 0  # latencies that found the histogram map full
    repeats: int = 0  # records of a flow that already had one since the last drain, ring full


@dataclass
class RecordBatch:
    """One drain of the connect probe: the main ring's records and the reserve's (new flows' first
    records while the main ring was full), as EVENT_DTYPE arrays; the long records (unix
    sockets, early failures) as raw bytes; and how many malformed records the rings skipped."""

    rows: np.ndarray
    reserve: np.ndarray = field(default_factory=lambda: np.zeros(0, EVENT_DTYPE))
    long: List[bytes] = field(default_factory=list)
    malformed: int = 0

    def __len__(self) -> int:
        return len(self.rows) + len(self.reserve) + len(self.long)


class PendingHandshake(NamedTuple):
    """An entry of the kernel's `handshakes` map."""

    sk: int
    tgid: int
    gen: int
    command: str
    syn_ns: int  # CLOCK_BOOTTIME


@dataclass
class ConnectionRecord:
    """One connect(), unconnected UDP send, or (kind handshake_end, never listed) the end of a
    handshake that was pending when its connect() returned. A connect record's outcome,
    latency and end error are updated in place when its handshake ends."""

    timestamp_usec: int
    pid: int
    tid: int
    uid: int
    command: str
    kind: str  # connect | udp_send | handshake_end
    family: str  # inet | inet6 | unix | unspec | af<N>
    transport: str  # tcp | udp | other | unknown
    destination: str  # IP address, unix path ("@name" when abstract), or ""
    port: int
    return_code: int  # 0 or -errno, as connect() returned it; 0 for UDP sends
    outcome: str  # succeeded | refused | timed_out | other_failed | in_progress | unknown | sent
    latency_usec: int = 0  # SYN sent -> established (or -> failure); 0 without a TCP handshake
    end_errno: int = 0  # the errno the connection attempt ended with; 0 if it succeeded
    syn_boot_ns: int = 0  # with pid, names the handshake (0: none)

    @property
    def error_name(self) -> str:
        return errno.errorcode.get(-self.return_code, str(-self.return_code)) if self.return_code else ""

    @property
    def end_error_name(self) -> str:
        return errno.errorcode.get(self.end_errno, str(self.end_errno)) if self.end_errno else ""

    @property
    def handshake(self) -> tuple:
        return (self.pid, self.syn_boot_ns)

    def end_with(self, end: "ConnectionRecord") -> None:
        """Take the outcome of this connect's handshake end."""
        self.outcome = end.outcome
        self.latency_usec = end.latency_usec
        self.end_errno = end.end_errno


class MalformedEvent(ValueError):
    """Bytes from the ring buffer that cannot be a record (wrong size): counted, never fatal."""


def _struct_of(fields) -> struct.Struct:
    """The struct.unpack_from reader of a ctypes mirror, derived from its fields (so the two cannot
    drift apart): one tuple per record instead of a ctypes copy, about half the per-record CPU of
    the poll path. Byte arrays read as bytes; the mirror has no padding between fields."""
    codes = {ctypes.c_uint64: "Q", ctypes.c_uint32: "I", ctypes.c_int32: "i", ctypes.c_uint16: "H",
             ctypes.c_uint8: "B"}
    out = ""
    for _name, ctype in fields:
        out += f"{ctypes.sizeof(ctype)}s" if hasattr(ctype, "_length_") else codes[ctype]
    return struct.Struct("=" + out)


_EVENT = _struct_of(ConnEvent._fields_)
assert _EVENT.size == EVENT_SIZE  # no padding: the offsets agree


def decode_event(raw: bytes, boot_to_realtime_ns: int) -> ConnectionRecord:
    """Decode one ring-buffer record; boot_to_realtime_ns converts CLOCK_BOOTTIME to wall time."""
    if len(raw) not in (EVENT_SIZE, LONG_EVENT_SIZE):
        raise MalformedEvent(f"record of {len(raw)} bytes, expected {EVENT_SIZE} or {LONG_EVENT_SIZE}")
    (boot_ns, tgid, tid, uid, ret, family, port, kind, transport, path_len, outcome, comm, addr,
     syn_ns, latency_usec, end_err) = _EVENT.unpack_from(raw)
    outcome_name = OUTCOME_NAMES.get(outcome)
    if outcome_name is None:
        raise MalformedEvent(f"record with outcome {outcome}, expected one of {sorted(OUTCOME_NAMES)}")
    # positional, in the dataclass's field order: a third of the cost of keyword arguments, on
    # a path run for every record (tens of thousands a second on a busy host)
    return ConnectionRecord(
        (boot_ns + boot_to_realtime_ns) // 1000,
        tgid,
        tid,
        uid,
        decode_comm(comm),
        KIND_NAMES.get(kind) or f"kind{kind}",
        FAMILY_NAMES.get(family) or f"af{family}",
        TRANSPORT_NAMES.get(transport, "unknown"),
        _destination(family, addr, raw[EVENT_SIZE:], path_len),
        port,
        ret,
        outcome_name,
        latency_usec,
        end_err if end_err > 0 else 0,
        syn_ns,
    )


@functools.lru_cache(maxsize=4096)  # a host runs few commands, and every record names one
def decode_comm(comm: bytes) -> str:
    """The command name as netwatchd shows and matches it everywhere (records, Summary, metrics,
    alerts): any process may name itself, so control characters, invalid UTF-8 and backslashes
    are escaped (netwatchd.text.printable). Every comm the kernel hands over comes through here."""
    return printable(comm.split(b"\0", 1)[0])


def _destination(family: int, addr: bytes, path: bytes, path_len: int) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, addr[:4])  # C: a fifth of ipaddress' cost
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(addr))  # Python's own spelling of mapped addresses
    if family == socket.AF_UNIX:
        return unix_path(path, path_len)
    return ""


def unix_path(raw: bytes, used: int) -> str:
    """A sun_path as people write it: abstract names get a leading '@' (as ss and systemd do);
    chosen by whoever bound it, so escaped like a command name."""
    raw = raw[: max(0, min(used, len(raw)))]
    if raw[:1] == b"\0":
        return "@" + printable(raw[1:].split(b"\0", 1)[0])
    return printable(raw.split(b"\0", 1)[0])
