"""The capped ring of recent per-connect records behind ListConnections (pure)."""
from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Dict, List, Tuple

from netwatchd.connects.records import ConnectionRecord


class RecentConnections:
    def __init__(self, capacity: int) -> None:
        self._records: Deque[ConnectionRecord] = deque(maxlen=capacity)

    @property
    def capacity(self) -> int:
        return self._records.maxlen or 0

    def resize(self, capacity: int) -> None:
        """Keep the newest records that fit the new capacity (a reload may change it)."""
        if capacity != self.capacity:
            self._records = deque(self._records, maxlen=capacity)

    def add(self, record: ConnectionRecord) -> None:
        self._records.append(record)

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
