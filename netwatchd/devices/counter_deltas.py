"""The kernel's per-device counters, read every tick, turned into what changed (pure, numpy).

The kernel map is an LRU (bpf/device.bpf.c): a flood of forged MACs makes it evict the entries
seen least recently, and a MAC that comes back starts from zero again with a new created_ns.
So a reading is compared with the previous one per MAC *and* per creation: a MAC whose entry
was made anew is counted from zero, not from what its old entry had; a MAC that vanished was
evicted. Both are counted (`evicted`) -- what an evicted entry counted after the last reading is
the only thing lost, and for an idle device that is nothing.

The comparison is a handful of array operations over the whole map, so a tick costs Python
work only for the devices that sent or received something since the last one: after a flood,
thousands of idle forged MACs in the map cost next to nothing per tick.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from netwatchd.devices.model import COUNTER_NAMES
from netwatchd.devices.records import CounterReadings, mac_text

# (mac, {counter: increase}, ifindex, vlan, created_ns: CLOCK_BOOTTIME when its entry was made)
Change = Tuple[str, Dict[str, int], int, int, int]


class CounterDeltas:
    def __init__(self) -> None:
        self._macs = np.zeros(0, dtype=np.uint64)  # sorted
        self._counters = np.zeros((0, len(COUNTER_NAMES)), dtype=np.uint64)
        self._created = np.zeros(0, dtype=np.uint64)
        self.evicted = 0  # kernel entries gone or made anew since we last read them

    def step(self, readings: CounterReadings) -> List[Change]:
        """What grew since the last step, for the MACs whose counters grew."""
        order = np.argsort(readings.macs, kind="stable")
        macs, counters = readings.macs[order], readings.counters[order]
        created = readings.created_ns[order]
        slot = np.searchsorted(self._macs, macs)
        slot_ok = np.minimum(slot, max(len(self._macs) - 1, 0))
        known = (slot < len(self._macs)) & (self._macs[slot_ok] == macs) if len(self._macs) else np.zeros(len(macs), bool)
        same = known & (self._created[slot_ok] == created) if len(self._macs) else known
        before = np.where(same[:, None], self._counters[slot_ok] if len(self._macs) else 0, 0)
        delta = np.where(counters > before, counters - before, 0)
        # evicted: entries gone from the map, and entries made anew (another created_ns)
        self.evicted += int(len(self._macs) - same.sum())
        self._macs, self._counters, self._created = macs, counters, created
        changed = np.flatnonzero(delta.any(axis=1))
        out: List[Change] = []
        for row in changed:
            d = delta[row]
            columns = np.flatnonzero(d)
            out.append((mac_text(int(macs[row])), {COUNTER_NAMES[c]: int(d[c]) for c in columns},
                        int(readings.ifindex[order[row]]), int(readings.vlan[order[row]]), int(created[row])))
        return out
