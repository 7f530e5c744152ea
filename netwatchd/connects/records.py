"""Per-connect records: the ctypes mirror of bpf/connect.h and their decoding (pure).

The kernel sends raw `struct nw_conn_event` bytes; `decode_event` turns them into a
ConnectionRecord with names a person reads (family, transport, destination, errno name).
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import socket
from dataclasses import dataclass

COMM_LEN = 16
PATH_LEN = 108  # sizeof(sun_path)

KIND_CONNECT = 1
KIND_UDP_SEND = 2
KIND_NAMES = {KIND_CONNECT: "connect", KIND_UDP_SEND: "udp_send"}

TRANSPORT_NAMES = {0: "unknown", 1: "tcp", 2: "udp", 3: "other"}
FAMILY_NAMES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix", 0: "unspec"}


class Counts4(ctypes.Structure):
    _fields_ = [
        ("succeeded", ctypes.c_uint64),
        ("failed", ctypes.c_uint64),
        ("in_progress", ctypes.c_uint64),
        ("udp_sends", ctypes.c_uint64),
    ]


class ProcEntry(ctypes.Structure):
    """struct nw_proc_entry: the value of proc_counts (key tgid) and of retired_counts."""

    _fields_ = [("comm", ctypes.c_char * COMM_LEN), ("gen", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("counts", Counts4)]


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
        ("pad", ctypes.c_uint8),
        ("comm", ctypes.c_char * COMM_LEN),
        ("addr", ctypes.c_uint8 * 16),
    ]


class ConnEventLong(ctypes.Structure):
    _fields_ = [("ev", ConnEvent), ("path", ctypes.c_char * PATH_LEN)]


EVENT_SIZE = ctypes.sizeof(ConnEvent)
LONG_EVENT_SIZE = ctypes.sizeof(ConnEventLong)  # padded to 8 bytes, as the C compiler does


@dataclass(frozen=True)
class ConnectionRecord:
    """One connect() or unconnected UDP send, as ListConnections shows it."""

    timestamp_usec: int
    pid: int
    tid: int
    uid: int
    command: str
    kind: str  # connect | udp_send
    family: str  # inet | inet6 | unix | unspec | af<N>
    transport: str  # tcp | udp | other | unknown
    destination: str  # IP address, unix path ("@name" when abstract), or ""
    port: int
    return_code: int  # 0 or -errno, as connect() returned it; 0 for UDP sends
    outcome: str  # succeeded | failed | in_progress | sent

    @property
    def error_name(self) -> str:
        return errno.errorcode.get(-self.return_code, str(-self.return_code)) if self.return_code else ""


class MalformedEvent(ValueError):
    """Bytes from the ring buffer that cannot be a record (wrong size): counted, never fatal."""


def outcome_of(kind: int, ret: int) -> str:
    if kind == KIND_UDP_SEND:
        return "sent"
    if ret == 0:
        return "succeeded"
    if ret == -errno.EINPROGRESS:
        return "in_progress"
    return "failed"


def decode_event(raw: bytes, boot_to_realtime_ns: int) -> ConnectionRecord:
    """Decode one ring-buffer record; boot_to_realtime_ns converts CLOCK_BOOTTIME to wall time."""
    if len(raw) not in (EVENT_SIZE, LONG_EVENT_SIZE):
        raise MalformedEvent(f"record of {len(raw)} bytes, expected {EVENT_SIZE} or {LONG_EVENT_SIZE}")
    ev = ConnEvent.from_buffer_copy(raw[:EVENT_SIZE])
    return ConnectionRecord(
        timestamp_usec=(ev.boot_ns + boot_to_realtime_ns) // 1000,
        pid=ev.tgid,
        tid=ev.tid,
        uid=ev.uid,
        command=decode_comm(ev.comm),
        kind=KIND_NAMES.get(ev.kind, f"kind{ev.kind}"),
        family=FAMILY_NAMES.get(ev.family, f"af{ev.family}"),
        transport=TRANSPORT_NAMES.get(ev.transport, "unknown"),
        destination=_destination(ev, raw[EVENT_SIZE:]),
        port=ev.port,
        return_code=ev.ret,
        outcome=outcome_of(ev.kind, ev.ret),
    )


def decode_comm(comm: bytes) -> str:
    return comm.split(b"\0", 1)[0].decode("utf-8", "replace")


def _destination(ev: ConnEvent, path: bytes) -> str:
    raw = bytes(ev.addr)
    if ev.family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if ev.family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw))
    if ev.family == socket.AF_UNIX:
        return unix_path(path, ev.path_len)
    return ""


def unix_path(raw: bytes, used: int) -> str:
    """A sun_path as people write it: abstract names get a leading '@' (as ss and systemd do)."""
    raw = raw[: max(0, min(used, len(raw)))]
    if raw[:1] == b"\0":
        return "@" + raw[1:].split(b"\0", 1)[0].decode("utf-8", "replace")
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
