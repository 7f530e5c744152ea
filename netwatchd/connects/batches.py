"""A drain of connect records as arrays (pure): split by what each part feeds, grouped with numpy.

The probe hands over whole arrays of EVENT_DTYPE rows (netwatchd/kernel/mapped_ring.py) and the
rare long records as bytes. Nothing here runs Python per record: the rows are checked, ordered
and split with masks; latencies are filed per (second, process, bucket) group; connection starts
are kept per (command, destination, port) flow, its newest few a tick, and handed to the
beacon tracker as columns (netwatchd/start_columns.py). Python runs per group, per distinct
command, and per record only for unix-socket records (rare).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Tuple

import numpy as np

from netwatchd.connects.latency import buckets_of
from netwatchd.column_hash import hash_columns
from netwatchd.connects.records import (EVENT_DTYPE, EVENT_SIZE, LONG_EVENT_SIZE, OUTCOME_NAMES, RecordBatch,
                                        decode_comm)
from netwatchd.record_decoding import MalformedRecords
from netwatchd.start_columns import StartColumns

KIND_CONNECT, KIND_HANDSHAKE_END = 1, 3  # bpf/connect.h NW_KIND_*
OUTCOME_SUCCEEDED = 1
_OUTCOMES = (min(OUTCOME_NAMES), max(OUTCOME_NAMES))
_FAMILY_VERSION = {socket.AF_INET: 4, socket.AF_INET6: 6}
# A tick's starts are reduced to their flows' newest few whenever this many rows have piled up,
# so a flood's tick holds at most this many plus a drain's worth.
COMPACT_AT = 1 << 18


@dataclass
class Split:
    calls: np.ndarray  # connect and UDP-send records, in time order: the recent ring's
    paths: Dict[int, bytes]  # index in calls -> a unix record's raw path bytes
    ends: np.ndarray  # handshake ends: they complete their connect's record
    latencies: np.ndarray  # established handshakes with a latency (a connect's or an end's)
    starts: np.ndarray  # connect() calls to an IP destination


def split_batch(batch: RecordBatch, dropped: MalformedRecords) -> Split:
    """Checks a drain's records (a record of the wrong size or with an unknown outcome is
    counted in `dropped` and left out) and splits them."""
    dropped.add(batch.malformed, "a record of another size in the ring")
    long_rows, long_paths = [], []
    for raw in batch.long:
        if len(raw) not in (EVENT_SIZE, LONG_EVENT_SIZE):
            dropped.add(1, f"record of {len(raw)} bytes, expected {EVENT_SIZE} or {LONG_EVENT_SIZE}")
            continue
        long_rows.append(raw[:EVENT_SIZE])
        long_paths.append(raw[EVENT_SIZE:])
    parts = [batch.rows, batch.reserve]
    if long_rows:
        parts.append(np.frombuffer(b"".join(long_rows), EVENT_DTYPE))
    rows = np.concatenate(parts) if len(batch.reserve) or long_rows else batch.rows
    path_of = np.full(len(rows), -1, dtype=np.int64)  # row -> index in long_paths
    path_of[len(rows) - len(long_rows):] = np.arange(len(long_rows))
    outcome = rows["outcome"]
    bad = (outcome < _OUTCOMES[0]) | (outcome > _OUTCOMES[1])
    if bad.any():
        dropped.add(int(bad.sum()), f"record with outcome {int(outcome[bad][0])}, expected one of "
                                    f"{sorted(OUTCOME_NAMES)}")
        rows, path_of = rows[~bad], path_of[~bad]
    if len(rows) != len(batch.rows):  # the reserve's and the long records: into time order
        order = np.argsort(rows["boot_ns"], kind="stable")
        rows, path_of = rows[order], path_of[order]
    kind = rows["kind"]
    is_end = kind == KIND_HANDSHAKE_END
    calls, call_paths = (rows[~is_end], path_of[~is_end]) if is_end.any() else (rows, path_of)
    paths = {int(i): long_paths[int(call_paths[i])] for i in np.flatnonzero(call_paths >= 0)}
    family = rows["family"]
    latencies = rows[(rows["outcome"] == OUTCOME_SUCCEEDED) & (rows["syn_ns"] != 0)]
    ip = (kind == KIND_CONNECT) & ((family == socket.AF_INET) | (family == socket.AF_INET6))
    # a busy drain is all calls to IP destinations: no copy then (a structured array's mask
    # indexing costs as much as the rest of the split)
    return Split(calls, paths, rows[is_end], latencies, rows if ip.all() else rows[ip])


def latency_groups(rows: np.ndarray, boot_offset_ns: int) -> Iterator[Tuple[int, Tuple[int, str], int, int]]:
    """(second, (pid, command), bucket, handshakes) per group of a drain's latencies."""
    if not len(rows):
        return
    keys = np.zeros(len(rows), dtype=[("second", "<i8"), ("tgid", "<u4"), ("comm", "S16"), ("bucket", "<i8")])
    keys["second"] = (rows["boot_ns"].astype(np.int64) + boot_offset_ns) // 1_000_000_000
    keys["tgid"] = rows["tgid"]
    keys["comm"] = rows["comm"]
    keys["bucket"] = buckets_of(rows["latency_usec"])
    groups, counts = np.unique(keys, return_counts=True)
    for (second, tgid, comm, bucket), n in zip(groups.tolist(), counts.tolist()):
        yield second, (tgid, decode_comm(comm)), bucket, n


@dataclass
class TickStarts:
    """Connection starts since the last observation, per (command, destination, port) flow: at
    most `per_flow` newest, as columns (numbers only: a structured array's fancy indexing is
    several times slower)."""

    per_flow: int
    _parts: List[Tuple[np.ndarray, ...]] = field(default_factory=list)
    _rows: int = 0

    def add(self, rows: np.ndarray, boot_offset_ns: int) -> None:
        if not len(rows):
            return
        # columns: command (2 words), address (2 words), port << 16 | family, time (us)
        comm, addr = _words(rows["comm"]), _words(rows["addr"])
        port_family = rows["port"].astype(np.uint64) << np.uint64(16) | rows["family"].astype(np.uint64)
        time_usec = (rows["boot_ns"].astype(np.int64) + boot_offset_ns) // 1000
        self._parts.append((comm[:, 0], comm[:, 1], addr[:, 0], addr[:, 1], port_family, time_usec))
        self._rows += len(rows)
        if self._rows >= COMPACT_AT:
            self._parts = [self._newest()]
            self._rows = len(self._parts[0][0])

    def _newest(self) -> Tuple[np.ndarray, ...]:
        """The starts kept, each flow's newest `per_flow`, ordered by flow then time. Flows are
        sorted by a 64-bit hash of their key (two sort keys instead of six) and told apart by
        the whole key: flows whose hashes collide may then come out in pieces, each piece cut to
        `per_flow` (the beacon tracker cuts a pair's starts of a tick to as many again)."""
        cols = [np.concatenate(c) for c in zip(*self._parts)] if len(self._parts) > 1 else list(self._parts[0])
        order = np.lexsort((cols[5], hash_columns(cols[:5])))
        cols = [c[order] for c in cols]
        n = len(order)
        same = np.ones(n - 1, dtype=bool) if n else np.zeros(0, dtype=bool)
        for c in cols[:5]:
            same &= c[1:] == c[:-1]
        starts = np.flatnonzero(np.r_[True, ~same])
        group_end = np.r_[starts[1:], n]
        end_of_row = np.repeat(group_end, np.diff(np.r_[starts, n]))
        keep = end_of_row - np.arange(n) <= self.per_flow
        return tuple(c[keep] for c in cols)

    def take(self) -> StartColumns:
        """The tick's starts as columns; starts afresh."""
        if not self._parts:
            return StartColumns.empty()
        comm0, comm1, addr0, addr1, port_family, time_usec = self._newest()
        self._parts, self._rows = [], 0
        comms, comm_index = _distinct_comms(comm0, comm1)
        names = ["command:" + decode_comm(c) for c in comms]
        sources = sorted(set(names))  # two comms may read alike once escaped
        index = {name: i for i, name in enumerate(sources)}
        source_of = np.array([index[name] for name in names], dtype=np.int32)
        address = np.stack([addr0, addr1], axis=1).view(np.uint8).reshape(-1, 16)
        family = np.where((port_family & np.uint64(0xFFFF)) == socket.AF_INET6, 6, 4).astype(np.uint8)
        return StartColumns(sources=sources, source=source_of[comm_index], family=family, address=address,
                            port=(port_family >> np.uint64(16)).astype(np.uint16), time_usec=time_usec)


def _words(column: np.ndarray) -> np.ndarray:
    """A 16-byte column (comm, addr) as two 64-bit words a row."""
    return np.ascontiguousarray(column).view("<u8").reshape(-1, 2)


def _distinct_comms(word0: np.ndarray, word1: np.ndarray) -> Tuple[List[bytes], np.ndarray]:
    """The distinct command names (as the kernel's 16 bytes) and each row's index among them:
    grouped by a hash of the name, checked against the whole name (a process names itself:
    should two names ever share a hash, the exact, slower grouping takes over)."""
    _, first, inverse = np.unique(hash_columns([word0, word1]), return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    words = np.stack([word0, word1], axis=1)
    if not (words == words[first[inverse]]).all():
        exact, first, inverse = np.unique(words, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return [words[i].tobytes() for i in first.tolist()], inverse
