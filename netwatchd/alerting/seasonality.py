"""Seasonality (pure): a rate learnt per slot of a period, so what is normal at 02:00 (a nightly
backup's burst) is excused at 02:00 and still alerts at 14:00.

The period (a week by default) is cut into slots (an hour). During a slot every key's
observations are summed (sum and sum of squares: two vector adds per tick over all keys, no
per-key work); when the slot ends, the slot's mean and second moment are folded into the
profile of that slot, an EWMA over periods (`seasonality_weight` for the newest period).

Profiles are kept only for keys that alerted at least once (the first time a key alerts it
gets a row, up to `seasonality_max_keys`): a key that never deviates needs no excuse, and
100k keys x 168 slots would be hundreds of MB. A row made during a slot still learns that
whole slot (the sums cover every key). So the first nightly burst alerts -- nothing is known
yet -- and from the next period on the same slot excuses it.

An anomaly is excused when the key's profile has its current slot learnt (seen in at least one
earlier period) and the value is within z_threshold standard deviations of that slot's mean
(the standard deviation floored at min_stddev, as for the rolling baseline). The rolling
baseline still learns and scores as before: seasonality only excuses, it never raises.

When the table removes keys (idle too long, or pushed out by its cap: BaselineTable), their rows
go too and the other rows and sums follow their keys' new table slots (`remap`).

Slots follow local time (a backup at 02:00 is at 02:00 whatever the UTC offset), computed
from the tick's own time, so a replay of recorded ticks learns and excuses the same way. The
UTC offset comes from `offset`, whose default (local_offset_sec) reads the system's time zone:
this module's one read of the system.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from netwatchd.alerting.baseline import Anomaly

MAX_PERIODS = 65535


def local_offset_sec(epoch_sec: float) -> int:
    return time.localtime(epoch_sec).tm_gmtoff


class SeasonalProfile:
    """One detector table's per-slot profiles and the current slot's sums."""

    def __init__(self, period_sec: int, slot_sec: int, weight: float, max_keys: int,
                 offset: Callable[[float], int] = local_offset_sec):
        self.period_sec, self.slot_sec = period_sec, slot_sec
        self.slots = period_sec // slot_sec
        self.weight, self.max_keys = weight, max_keys
        self.offset = offset
        self.current = -1  # absolute slot number being summed (-1: none yet)
        self.count = 0  # ticks summed in it
        self.total = np.zeros(0)  # per table slot: sum of x over the current slot
        self.squares = np.zeros(0)  # and of x*x
        self.row_of: Dict[int, int] = {}  # table slot -> profile row
        self.row_keys: List[str] = []
        self.row_slot: List[int] = []  # row -> table slot (-1: a saved key the table lost)
        self.mean = np.zeros((0, self.slots), dtype=np.float32)
        self.m2 = np.zeros((0, self.slots), dtype=np.float32)
        self.periods = np.zeros((0, self.slots), dtype=np.uint16)
        self.dropped_rows = 0  # rows of keys the table removed (remap)

    def geometry(self) -> tuple:
        return self.period_sec, self.slot_sec

    def absolute_slot(self, time_usec: int) -> int:
        sec = time_usec / 1e6
        return int((sec + self.offset(sec)) // self.slot_sec)

    # -- per tick ----------------------------------------------------------------------------
    def step(self, time_usec: int, x: np.ndarray, moved: Optional[np.ndarray], anomalies: Iterable[Anomaly],
             slot_of: Callable[[str], int], z_threshold: float, min_stddev: float) -> List[Anomaly]:
        """A table's tick, after the rolling baseline scored it (x: the tick's observations by
        table slot; moved: the slots the table compacted this tick, or None): the sums follow
        their keys, a slot that ended is folded, the anomalies normal for the current slot are
        excused (every one that fired gets a profile row, so its slots are learnt from now on),
        and the tick is summed. Returns the anomalies not excused."""
        if moved is not None:
            self.remap(moved)
        self.advance(time_usec)
        kept = []
        for a in anomalies:
            slot = slot_of(a.key)
            if not self.excused(a, slot, z_threshold, min_stddev):
                kept.append(a)
            self.adopt(a.key, slot)
        self.accumulate(x)
        return kept

    def advance(self, time_usec: int) -> None:
        """Before a tick's anomalies are excused: a slot that ended is folded into its profile."""
        now = self.absolute_slot(time_usec)
        if now == self.current:
            return
        if self.current >= 0 and self.count and self.row_keys:
            self._fold()
        self.current, self.count = now, 0
        self.total[:] = 0
        self.squares[:] = 0

    def accumulate(self, x: np.ndarray) -> None:
        """After scoring: this tick's observations (laid out by table slot) into the sums."""
        n = len(x)
        if n > len(self.total):
            grown = max(n, 2 * len(self.total), 1024)
            self.total = np.concatenate([self.total, np.zeros(grown - len(self.total))])
            self.squares = np.concatenate([self.squares, np.zeros(grown - len(self.squares))])
        self.total[:n] += x
        self.squares[:n] += x * x
        self.count += 1

    def excused(self, a: Anomaly, table_slot: int, z_threshold: float, min_stddev: float) -> bool:
        row = self.row_of.get(table_slot)
        if row is None:
            return False
        s = self.current % self.slots
        if self.periods[row, s] == 0:
            return False  # this slot has never been seen: nothing to excuse with
        mean = float(self.mean[row, s])
        std = max(float(np.sqrt(max(float(self.m2[row, s]) - mean * mean, 0.0))), min_stddev)
        return a.observed <= mean + z_threshold * std

    def adopt(self, key: str, table_slot: int) -> None:
        """A key that alerted gets a profile row, while there is room."""
        if table_slot in self.row_of or len(self.row_keys) >= self.max_keys:
            return
        row = len(self.row_keys)
        if row >= len(self.mean):
            grown = max(16, 2 * len(self.mean))
            self.mean = _grow_rows(self.mean, grown)
            self.m2 = _grow_rows(self.m2, grown)
            self.periods = _grow_rows(self.periods, grown)
        self.row_of[table_slot] = row
        self.row_keys.append(key)
        self.row_slot.append(table_slot)

    def remap(self, moved: np.ndarray) -> None:
        """The table compacted its slots (BaselineTable.observe/prune): moved[old slot] is the new
        slot, -1 for a key it removed. The current slot's sums follow their keys; a removed key's
        profile row goes (freeing its place under max_keys); a row of a saved key the table
        never had (slot -1) stays as it is."""
        n = len(moved)
        m = min(n, len(self.total))
        kept = np.flatnonzero(moved[:m] >= 0)
        for name in ("total", "squares"):
            old = getattr(self, name)
            new = np.zeros(len(old))
            new[moved[kept]] = old[kept]
            setattr(self, name, new)
        rows = len(self.row_keys)
        if not rows:
            return
        at = np.asarray(self.row_slot, dtype=np.int64)
        known = (at >= 0) & (at < n)
        new_at = np.where(known, moved[np.where(known, at, 0)], at)
        keep = np.flatnonzero(~known | (new_at >= 0))
        if len(keep) < rows:
            for name in ("mean", "m2", "periods"):
                a = getattr(self, name)
                a[:len(keep)] = a[keep]
                a[len(keep):rows] = 0
            self.row_keys = [self.row_keys[r] for r in keep]
            self.dropped_rows += rows - len(keep)
        self.row_slot = new_at[keep].tolist()
        self.row_of = {slot: row for row, slot in enumerate(self.row_slot) if slot >= 0}

    def _fold(self) -> None:
        rows = len(self.row_keys)
        at = np.asarray(self.row_slot, dtype=np.int64)
        inside = (at >= 0) & (at < len(self.total))
        at = np.where(inside, at, 0)
        n = float(self.count)
        seen_mean = np.where(inside, self.total[at] / n, 0.0) if len(self.total) else np.zeros(rows)
        seen_m2 = np.where(inside, self.squares[at] / n, 0.0) if len(self.total) else np.zeros(rows)
        s = self.current % self.slots
        first = self.periods[:rows, s] == 0
        w = self.weight
        self.mean[:rows, s] = np.where(first, seen_mean, (1 - w) * self.mean[:rows, s] + w * seen_mean)
        self.m2[:rows, s] = np.where(first, seen_m2, (1 - w) * self.m2[:rows, s] + w * seen_m2)
        self.periods[:rows, s] = np.minimum(self.periods[:rows, s].astype(np.int64) + 1, MAX_PERIODS)

    # -- persistence ---------------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        rows = len(self.row_keys)
        return {"geometry": np.asarray([self.period_sec, self.slot_sec], dtype=np.int64),
                "current": np.asarray([self.current, self.count], dtype=np.int64),
                "total": self.total.copy(), "squares": self.squares.copy(),
                "rows": np.asarray(self.row_keys, dtype=str), "mean": self.mean[:rows].copy(),
                "m2": self.m2[:rows].copy(), "periods": self.periods[:rows].copy()}

    def load_state(self, state: Dict[str, np.ndarray], slot_of_key: Callable[[str], Optional[int]]) -> bool:
        """What was learnt, when it was learnt with the same period and slot; False otherwise."""
        if tuple(int(v) for v in state["geometry"]) != self.geometry():
            return False
        self.current, self.count = (int(v) for v in state["current"])
        self.total, self.squares = np.array(state["total"], dtype=float), np.array(state["squares"], dtype=float)
        keys = [str(k) for k in state["rows"]]
        self.mean = np.array(state["mean"], dtype=np.float32).reshape(len(keys), self.slots)
        self.m2 = np.array(state["m2"], dtype=np.float32).reshape(len(keys), self.slots)
        self.periods = np.array(state["periods"], dtype=np.uint16).reshape(len(keys), self.slots)
        self.row_keys, self.row_of, self.row_slot = [], {}, []
        for row, key in enumerate(keys):
            slot = slot_of_key(key)
            if slot is not None:
                self.row_of[slot] = row
            self.row_keys.append(key)
            self.row_slot.append(-1 if slot is None else slot)
        return True


def _grow_rows(a: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows,) + a.shape[1:], dtype=a.dtype)
    out[: len(a)] = a
    return out
