"""The capped ring of recent per-connect records behind ListConnections (pure)."""
from __future__ import annotations

from collections import deque
from typing import Deque, List, Tuple

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

    def __len__(self) -> int:
        return len(self._records)
