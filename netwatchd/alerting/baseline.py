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

from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

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


class BaselineTable:
    def __init__(self, capacity: int = 1024):
        self._index: Dict[str, int] = {}
        self._keys: List[str] = []
        self.mean = np.zeros(capacity)
        self.var = np.zeros(capacity)
        self.ticks = np.zeros(capacity, dtype=np.int64)  # ticks observed since the key appeared
        self.streak = np.zeros(capacity, dtype=np.int64)  # anomalous ticks in a row

    def __len__(self) -> int:
        return len(self._keys)

    def indexes(self, keys: Iterable[str]) -> np.ndarray:
        """Slots of `keys`, adding the new ones (arrays grow by doubling)."""
        keys = list(keys)
        out = list(map(self._index.get, keys))  # the common case, without a Python-level loop
        if None in out:
            for n, key in enumerate(keys):
                if out[n] is None:
                    i = self._index.get(key)  # the same new key may come twice
                    if i is None:
                        i = self._index[key] = len(self._keys)
                        self._keys.append(key)
                        if i >= len(self.mean):
                            self._grow()
                    out[n] = i
        return np.asarray(out, dtype=np.int64)

    def _grow(self) -> None:
        n = len(self.mean) * 2
        for name in ("mean", "var", "ticks", "streak"):
            old = getattr(self, name)
            new = np.zeros(n, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def update(self, observed: Dict[str, float], p: BaselineParams) -> List[Anomaly]:
        """One tick: every known key is observed (0 when absent), scored, then learnt from."""
        return self.update_dense(self.dense(observed), p)

    def dense(self, observed: Dict[str, float]) -> np.ndarray:
        """`observed` laid out by slot, every known key (0 when absent), new keys added."""
        idx = self.indexes(observed.keys())
        x = np.zeros(len(self._keys))
        if len(idx):
            x[idx] = np.fromiter(observed.values(), dtype=float, count=len(idx))
        return x

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
        }

    @classmethod
    def from_state(cls, state: Dict[str, np.ndarray]) -> "BaselineTable":
        keys = [str(k) for k in state["keys"]]
        table = cls(max(1024, len(keys)))
        table.indexes(keys)
        n = len(keys)
        table.mean[:n], table.var[:n], table.ticks[:n] = state["mean"], state["var"], state["ticks"]
        return table
