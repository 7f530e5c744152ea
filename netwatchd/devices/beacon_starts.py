"""Devices' connection starts for beacons (pure): kernel readings of the beacon_pairs map in,
each pair's new starts out, once per observation.

The kernel keeps per (device, peer, port) only the last two SYN times and a count, read every
tick. One or two new starts since the last reading are exact. More (three SYNs of one pair in
one tick: intervals far below any beacon's) are the two known ones plus the rest spread evenly
before them, since the last reading's newest: approximate, and only ever for a pair far too
busy to be a beacon.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

PairKeyT = Tuple[str, str, int]  # (mac, peer address, port)
ReadingT = Tuple[int, int, int]  # (last_ns, prev_ns, count), CLOCK_BOOTTIME


class DeviceStarts:
    def __init__(self, boot_to_realtime_ns: int):
        self._offset = boot_to_realtime_ns
        self._seen: Dict[PairKeyT, ReadingT] = {}
        self._new: Dict[PairKeyT, List[int]] = {}

    def read(self, readings: Dict[PairKeyT, ReadingT]) -> None:
        """One reading of the whole map; pairs the kernel's LRU dropped are forgotten here too."""
        seen = {}
        for key, (last_ns, prev_ns, count) in readings.items():
            before = self._seen.get(key)
            seen[key] = (last_ns, prev_ns, count)
            new = count - before[2] if before else count
            if new <= 0:
                continue
            times = [last_ns] if new == 1 or not prev_ns else [prev_ns, last_ns]
            if new > 2 and before:
                step = (prev_ns - before[0]) / (new - 1)
                times = [int(before[0] + step * i) for i in range(1, new - 1)] + times
            self._new.setdefault(key, []).extend((t + self._offset) // 1000 for t in times)
        self._seen = seen

    def take(self, name_of: Callable[[str, str], str]) -> List[list]:
        """The new starts since the last take, as TickObservation.connection_starts entries;
        `name_of(mac, address)` is the name that device looked the address up by."""
        out = [[f"device:{mac}", address, port, name_of(mac, address), times[-8:]]
               for (mac, address, port), times in self._new.items()]
        self._new = {}
        return out
