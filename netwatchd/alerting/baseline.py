"""Rolling per-key baselines, vectorized in numpy over all keys at once (pure).

Each key (a device, a command) has an exponentially weighted mean and variance of one metric
per tick. A tick scores every key in a handful of array operations -- no per-key Python loop on
the hot path -- and says which keys are anomalous: warmed up, above an absolute floor, and more
than z_threshold standard deviations above their own normal for N ticks in a row. Keys still
warming up are judged against a fixed "cold" rate instead. Anomalous values enter the baseline
clipped to the threshold and at a tenth of the weight, so a storm does not teach the baseline
that storms are normal.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class BaselineParams:
    alpha: float
    z_threshold: float
    min_stddev: float
    warmup_ticks: int
    floor: float
    cold_rate: float
    consecutive: int
    # a burst (netwatchd/alerting/burst.py): one hot tick this far above normal and this large
    # fires at once; the defaults never do
    burst_score: float = float("inf")
    burst_min: float = float("inf")


@dataclass(frozen=True)
class Anomaly:
    key: str
    observed: float
    baseline: float
    score: float
    warmed_up: bool
    burst: bool = False  # fired on its first tick, not after `consecutive` ticks


ARRAYS = ("mean", "var", "ticks", "streak", "last_seen")
UNSTAMPED = -1  # last_seen of a key loaded from an older state file: stamped at the next tick
# When the cap must make room for new keys it evicts 1/EVICT_SLACK of the cap more than the tick
# needs (the longest idle, which would be next anyway), so a steady trickle of new keys compacts
# the arrays once per batch rather than every tick.
EVICT_SLACK = 64


class BaselineTable:
    """Per-key baselines in parallel arrays, one slot per key.

    Bounded (issue 21: any local user can mint command names, any device MACs): `observe()`
    keeps at most `max_keys` keys and `prune()` removes the keys idle (observed 0) for longer
    than the idle time. Idle time is counted on the clock the caller passes (the detector's
    `watched` clock: observation time, without the time nothing was watched), so a replay of
    recorded ticks prunes the same keys. Removing keys compacts the arrays and hands the caller
    `moved` (old slot -> new slot, -1 for a removed key), to move what it keeps by slot (the
    seasonal profiles).

    Room for new keys: a key in this tick's observation is never removed to make room. Beyond
    the cap, the keys idle the longest go first (ties: the oldest key). When a tick brings more
    new keys than that frees (a user minting 200k command names at once), the new keys with the
    largest counts this tick are taken in (ties: observation order) and the rest are not
    tracked this tick; they are considered again when they are seen again.

    Counted: `pruned` (idle too long), `evicted` (pushed out by the cap), `refused` (new keys
    not taken in).
    """

    def __init__(self, capacity: int = 1024):
        self._index: Dict[str, int] = {}
        self._keys: List[str] = []
        self.mean = np.zeros(capacity)
        self.var = np.zeros(capacity)
        self.ticks = np.zeros(capacity, dtype=np.int64)  # ticks observed since the key appeared
        self.streak = np.zeros(capacity, dtype=np.int64)  # anomalous ticks in a row
        self.last_seen = np.zeros(capacity, dtype=np.int64)  # clock (usec) when last observed non-zero
        self._unstamped = False  # some last_seen are UNSTAMPED
        self.pruned = 0
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._keys)

    def indexes(self, keys: Iterable[str]) -> np.ndarray:
        """Slots of `keys`, adding the new ones (arrays grow by doubling); no cap."""
        keys = list(keys)
        out = list(map(self._index.get, keys))  # the common case, without a Python-level loop
        if None in out:
            for n, key in enumerate(keys):
                if out[n] is None:
                    i = self._index.get(key)  # the same new key may come twice
                    if i is None:
                        self._add([key])
                        i = len(self._keys) - 1
                    out[n] = i
        return np.asarray(out, dtype=np.int64)

    def _add(self, keys: List[str]) -> None:
        first = len(self._keys)
        self._keys.extend(keys)
        self._index.update(zip(keys, range(first, len(self._keys))))
        if len(self._keys) > len(self.mean):
            self._resize(max(len(self._keys), 2 * len(self.mean)))

    def _resize(self, capacity: int) -> None:
        for name in ARRAYS:
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            n = min(len(old), capacity)
            new[:n] = old[:n]
            setattr(self, name, new)

    # -- the bounds ----------------------------------------------------------------------------
    def observe(self, observed: Dict[str, float], now: int,
                max_keys: Optional[int] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """One tick's `observed` laid out by slot (every kept key, 0 when absent), new keys taken
        in up to `max_keys`, the keys observed non-zero stamped `now` (the idle clock, usec).
        Returns (x, moved): moved is None unless making room moved slots (see the class)."""
        if self._unstamped:
            self._stamp(now)
        keys = list(observed)
        vals = np.fromiter(observed.values(), dtype=float, count=len(keys))
        out = list(map(self._index.get, keys))  # the common case, without a Python-level loop
        moved, refused = None, False
        if None in out:
            new = [n for n, slot in enumerate(out) if slot is None]
            if max_keys is not None and len(self._keys) + len(new) > max_keys:
                moved, admitted = self._make_room(out, new, vals, max_keys)
                refused = len(admitted) < len(new)
                new = admitted
                if moved is not None:
                    out = list(map(self._index.get, keys))
            first = len(self._keys)
            self._add([keys[n] for n in new])
            self.last_seen[first:len(self._keys)] = now  # a new key counts as seen when it comes
            for slot, n in enumerate(new, first):
                out[n] = slot
        if refused:
            kept = [n for n, slot in enumerate(out) if slot is not None]
            idx = np.asarray([out[n] for n in kept], dtype=np.int64)
            vals = vals[kept]
        else:
            idx = np.asarray(out, dtype=np.int64)
        x = np.zeros(len(self._keys))
        if len(idx):
            x[idx] = vals
            self.last_seen[idx[vals > 0]] = now
        return x, moved

    def _make_room(self, out: List[Optional[int]], new: List[int], vals: np.ndarray,
                   max_keys: int) -> Tuple[Optional[np.ndarray], List[int]]:
        """Evict the longest idle keys not in this tick for `new` (positions in the tick); returns
        (moved, the positions taken in)."""
        n = len(self._keys)
        candidate = np.ones(n, dtype=bool)
        candidate[np.asarray([slot for slot in out if slot is not None], dtype=np.int64)] = False
        candidates = np.flatnonzero(candidate)
        moved = None
        batch = min(len(candidates), n + len(new) - max_keys + max_keys // EVICT_SLACK)
        if batch > 0:
            order = np.argsort(self.last_seen[candidates], kind="stable")[:batch]
            keep = np.ones(n, dtype=bool)
            keep[candidates[order]] = False
            self.evicted += batch
            moved = self._compact(keep)
        room = max(max_keys - len(self._keys), 0)
        if len(new) > room:
            largest = np.argsort(-vals[new], kind="stable")[:room]
            self.refused += len(new) - room
            new = [new[i] for i in np.sort(largest)]
        return moved, new

    def prune(self, now: int, idle_usec: int, max_keys: int) -> Optional[np.ndarray]:
        """Remove the keys not observed for longer than `idle_usec` by `now` (the idle clock),
        then, if still more than `max_keys` (a lowered cap), the longest idle. Returns moved
        (old slot -> new slot, -1 removed), or None when nothing was removed."""
        n = len(self._keys)
        if not n:
            return None
        if self._unstamped:
            self._stamp(now)
        last = self.last_seen[:n]
        drop = last < now - idle_usec
        idle = int(np.count_nonzero(drop))
        over = n - idle - max_keys
        if over > 0:
            rest = np.flatnonzero(~drop)
            drop[rest[np.argsort(last[rest], kind="stable")[:over]]] = True
            self.evicted += over
        elif not idle:
            return None
        self.pruned += idle
        return self._compact(~drop)

    def _compact(self, keep: np.ndarray) -> np.ndarray:
        n = len(self._keys)
        kept = np.flatnonzero(keep[:n])
        m = len(kept)
        moved = np.full(n, -1, dtype=np.int64)
        moved[kept] = np.arange(m)
        for name in ARRAYS:
            a = getattr(self, name)
            a[:m] = a[kept]
            a[m:n] = 0
        self._keys = list(itertools.compress(self._keys, keep[:n].tolist()))
        self._index = dict(zip(self._keys, range(m)))
        if len(self.mean) > 4 * max(m, 1024):  # give memory back after a flood
            self._resize(max(1024, 2 * m))
        return moved

    def _stamp(self, now: int) -> None:
        last = self.last_seen[:len(self._keys)]
        last[last == UNSTAMPED] = now
        self._unstamped = False

    def update(self, observed: Dict[str, float], p: BaselineParams) -> List[Anomaly]:
        """One tick: every known key is observed (0 when absent), scored, then learnt from."""
        return self.update_dense(self.dense(observed), p)

    def dense(self, observed: Dict[str, float]) -> np.ndarray:
        """`observed` laid out by slot, every known key (0 when absent), new keys added (no cap,
        no idle clock: observe() is the bounded form)."""
        return self.observe(observed, 0)[0]

    def key(self, slot: int) -> str:
        return self._keys[slot]

    def slot(self, key: str):
        return self._index.get(key)

    def update_dense(self, x: np.ndarray, p: BaselineParams) -> List[Anomaly]:
        """The same, with the observations already laid out by slot (len(x) == len(self))."""
        n = len(x)
        mean, var, ticks, streak = self.mean[:n], self.var[:n], self.ticks[:n], self.streak[:n]
        std = np.maximum(np.sqrt(var), p.min_stddev)
        z = (x - mean) / std
        warm = ticks >= p.warmup_ticks
        hot = np.where(warm, z >= p.z_threshold, x >= p.cold_rate) & (x >= p.floor)
        streak[:] = np.where(hot, streak + 1, 0)
        # a key still warming up has no normal to be far from: its burst is the count alone
        burst = hot & (x >= p.burst_min) & (~warm | (z >= p.burst_score))
        fire = np.flatnonzero((streak >= p.consecutive) | burst)
        anomalies = [
            Anomaly(self._keys[i], float(x[i]), float(mean[i]), float(z[i]), bool(warm[i]),
                    bool(burst[i] and streak[i] < p.consecutive)) for i in fire
        ]
        # learn; an anomalous value counts only a tenth, clipped to the threshold: a storm
        # neither teaches that storms are normal nor inflates the variance enough to hide its
        # own second tick, while a lasting new level is still learnt, ten times slower
        learn = np.where(hot & warm, mean + p.z_threshold * std, x)
        alpha = np.where(hot, p.alpha * 0.1, p.alpha)
        delta = learn - mean
        mean += alpha * delta
        var[:] = (1 - alpha) * (var + alpha * delta * delta)
        ticks += 1
        return anomalies

    def stats(self, key: str) -> Tuple[float, float, int]:
        """(mean, stddev, ticks observed) of one key, for display and tests."""
        i = self._index[key]
        return float(self.mean[i]), float(np.sqrt(self.var[i])), int(self.ticks[i])

    # -- persistence ------------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        n = len(self._keys)
        return {
            "keys": np.asarray(self._keys, dtype=str),  # plain strings: loading needs no pickle
            "mean": self.mean[:n].copy(),
            "var": self.var[:n].copy(),
            "ticks": self.ticks[:n].copy(),
            "last_seen": self.last_seen[:n].copy(),
        }

    @classmethod
    def from_state(cls, state: Dict[str, np.ndarray]) -> "BaselineTable":
        keys = [str(k) for k in state["keys"]]
        table = cls(max(1024, len(keys)))
        table._add(keys)
        n = len(keys)
        table.mean[:n], table.var[:n], table.ticks[:n] = state["mean"], state["var"], state["ticks"]
        if "last_seen" in state:
            table.last_seen[:n] = state["last_seen"]
        else:  # saved before keys were pruned: idle from the next tick on
            table.last_seen[:n] = UNSTAMPED
            table._unstamped = n > 0
        return table
