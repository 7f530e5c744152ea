"""The capped ring of recent per-connect records behind ListConnections (pure).

A connect whose handshake was still pending when it returned is listed as in_progress until
the handshake's end arrives; the end then completes that record in place. An end may arrive
just before its connect's record (both written at once on two CPUs): it waits in `_early`.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Callable, Deque, Dict, List, Tuple

from netwatchd.connects.records import ConnectionRecord


class RecentConnections:
    EARLY_ENDS = 1024  # ends waiting for their connect's record (a few at most in practice)

    def __init__(self, capacity: int) -> None:
        self._records: Deque[ConnectionRecord] = deque(maxlen=capacity)
        self._pending: "OrderedDict[tuple, ConnectionRecord]" = OrderedDict()
        self._early: "OrderedDict[tuple, ConnectionRecord]" = OrderedDict()

    @property
    def capacity(self) -> int:
        return self._records.maxlen or 0

    def resize(self, capacity: int) -> None:
        """Keep the newest records that fit the new capacity (a reload may change it)."""
        if capacity != self.capacity:
            self._records = deque(self._records, maxlen=capacity)

    def add(self, record: ConnectionRecord) -> None:
        self._records.append(record)
        if record.outcome == "in_progress":
            end = self._early.pop(record.handshake, None)
            if end is not None:
                record.end_with(end)
                return
            self._pending[record.handshake] = record
            while len(self._pending) > self.capacity:  # records that left the ring long ago
                self._pending.popitem(last=False)

    def end_handshake(self, end: ConnectionRecord) -> None:
        record = self._pending.pop(end.handshake, None)
        if record is not None:
            record.end_with(end)
            return
        self._early[end.handshake] = end
        while len(self._early) > self.EARLY_ENDS:  # its connect's record was lost (ring full)
            self._early.popitem(last=False)

    def newest(self, pid: int, limit: int) -> Tuple[List[ConnectionRecord], bool]:
        """Up to `limit` records, newest first, of one pid (0 = all); truncated if more matched."""
        out: List[ConnectionRecord] = []
        for record in reversed(self._records):
            if pid and record.pid != pid:
                continue
            if len(out) == limit:
                return out, True
            out.append(record)
        return out, False

    def newest_per_process(self, pid: int, limit: int,
                           keep: Callable[[ConnectionRecord], bool]) -> Tuple[Dict[int, List[ConnectionRecord]], bool]:
        """The newest `limit` records of each process (pid 0 = every process) that `keep`
        accepts, oldest first within a process. A process with matching records is present even
        when limit is 0 (with an empty list); truncated if any process had more than `limit`."""
        by_pid: Dict[int, List[ConnectionRecord]] = {}
        truncated = False
        for record in reversed(self._records):
            if (pid and record.pid != pid) or not keep(record):
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
        return len(self._records)
