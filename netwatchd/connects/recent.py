"""The capped ring of recent per-connect records behind ListConnections (pure).

Records are kept as the kernel wrote them, in one numpy array of EVENT_DTYPE rows: a drain's
records go in with one array copy, and a ConnectionRecord (names, address text) is made only
for the records a query returns (and cached until the record changes or leaves the ring). The
rare unix-socket records keep their path bytes beside the ring, by sequence number.

A connect whose handshake was still pending when it returned is listed as in_progress until
the handshake's end arrives; the end then completes that row in place. An end may arrive
just before its connect's record (both written at once on two CPUs): it waits in `_early`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from netwatchd.connects.records import EVENT_DTYPE, ConnectionRecord

OUTCOME_IN_PROGRESS = 5  # bpf/connect.h NW_OUT_IN_PROGRESS
_END_FIELDS = ("outcome", "latency_usec", "end_err")


class RecentConnections:
    EARLY_ENDS = 1024  # ends waiting for their connect's record (a few at most in practice)

    def __init__(self, capacity: int, decode: Callable[[bytes], ConnectionRecord]) -> None:
        self._rows = np.zeros(capacity, EVENT_DTYPE)
        self._count = 0  # records ever added: record number s lives in row s % capacity
        self._held = 0  # the newest this many of them are held
        self._decode = decode
        self._paths: Dict[int, bytes] = {}  # record number -> a unix record's raw path, in order
        self._decoded: Dict[int, ConnectionRecord] = {}
        self._pending: "OrderedDict[tuple, int]" = OrderedDict()  # (pid, syn_ns) -> record number
        self._early: "OrderedDict[tuple, tuple]" = OrderedDict()  # (pid, syn_ns) -> end fields

    @property
    def capacity(self) -> int:
        return len(self._rows)

    @property
    def _first(self) -> int:
        """The number of the oldest record still held."""
        return self._count - self._held

    def resize(self, capacity: int) -> None:
        """Keep the newest records that fit the new capacity (a reload may change it)."""
        if capacity == self.capacity:
            return
        kept = np.arange(max(self._first, self._count - capacity), self._count)
        rows = np.zeros(capacity, EVENT_DTYPE)
        rows[kept % capacity] = self._rows[kept % self.capacity]
        self._rows, self._held = rows, len(kept)
        self._forget_before(self._first)

    def add(self, rows: np.ndarray, paths: Optional[Dict[int, bytes]] = None) -> None:
        """A drain's records (EVENT_DTYPE, oldest first) and the path bytes of its unix ones, by
        row index."""
        skip = max(0, len(rows) - self.capacity)  # more than the ring holds: only the newest
        first = self._count + skip
        start, kept = first % self.capacity, rows[skip:]
        head = min(len(kept), self.capacity - start)  # up to the end of the array, then from its start
        self._rows[start:start + head] = kept[:head]
        self._rows[:len(kept) - head] = kept[head:]
        self._count += len(rows)
        self._held = min(self.capacity, self._held + len(rows))
        for i, path in (paths or {}).items():
            if i >= skip:
                self._paths[self._count - len(rows) + i] = path
        self._forget_before(self._first)
        for i in np.flatnonzero(rows["outcome"][skip:] == OUTCOME_IN_PROGRESS):  # non-blocking connects
            number = first + int(i)
            row = self._rows[number % self.capacity]
            key = (int(row["tgid"]), int(row["syn_ns"]))
            end = self._early.pop(key, None)
            if end is not None:
                self._complete(number, end)
                continue
            self._pending[key] = number
            while len(self._pending) > self.capacity:  # records that left the ring long ago
                self._pending.popitem(last=False)

    def end_handshakes(self, ends: np.ndarray) -> None:
        """Handshake-end records (EVENT_DTYPE): each completes its connect's row."""
        for tgid, syn_ns, outcome, latency, err in zip(ends["tgid"].tolist(), ends["syn_ns"].tolist(),
                                                       ends["outcome"].tolist(), ends["latency_usec"].tolist(),
                                                       ends["end_err"].tolist()):
            key, end = (tgid, syn_ns), (outcome, latency, err)
            number = self._pending.pop(key, None)
            if number is not None:
                if number >= self._first:
                    self._complete(number, end)
                continue
            self._early[key] = end
            while len(self._early) > self.EARLY_ENDS:  # its connect's record was lost (ring full)
                self._early.popitem(last=False)

    def _complete(self, number: int, end: tuple) -> None:
        row = number % self.capacity
        for name, value in zip(_END_FIELDS, end):
            self._rows[name][row] = value
        self._decoded.pop(number, None)

    def _forget_before(self, first: int) -> None:
        while self._paths and next(iter(self._paths)) < first:
            del self._paths[next(iter(self._paths))]
        if len(self._decoded) > self.capacity + self.capacity // 4:
            self._decoded = {n: r for n, r in self._decoded.items() if n >= first}

    def _record(self, number: int) -> ConnectionRecord:
        record = self._decoded.get(number)
        if record is None:
            raw = self._rows[number % self.capacity].tobytes() + self._paths.get(number, b"")
            record = self._decoded[number] = self._decode(raw)
        return record

    def _newest_numbers(self, pid: int) -> np.ndarray:
        """Numbers of the held records of one pid (0 = all), newest first."""
        numbers = np.arange(self._count - 1, self._first - 1, -1)
        if pid:
            numbers = numbers[self._rows["tgid"][numbers % self.capacity] == pid]
        return numbers

    def newest(self, pid: int, limit: int) -> Tuple[List[ConnectionRecord], bool]:
        """Up to `limit` records, newest first, of one pid (0 = all); truncated if more matched."""
        numbers = self._newest_numbers(pid)
        return [self._record(int(n)) for n in numbers[:limit]], len(numbers) > limit

    def newest_per_process(self, pid: int, limit: int,
                           keep: Callable[[ConnectionRecord], bool]) -> Tuple[Dict[int, List[ConnectionRecord]], bool]:
        """The newest `limit` records of each process (pid 0 = every process) that `keep`
        accepts, oldest first within a process. A process with matching records is present even
        when limit is 0 (with an empty list); truncated if any process had more than `limit`."""
        by_pid: Dict[int, List[ConnectionRecord]] = {}
        truncated = False
        for n in self._newest_numbers(pid).tolist():
            record = self._record(n)
            if not keep(record):
                continue
            shown = by_pid.setdefault(record.pid, [])
            if len(shown) < limit:
                shown.append(record)
            else:
                truncated = True
        for shown in by_pid.values():
            shown.reverse()
        return by_pid, truncated

    def __len__(self) -> int:
        return self._held
