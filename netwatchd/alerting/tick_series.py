"""The last ticks' values with the baselines they were judged against (pure): what the web UI
draws (the web UI, netwatchd/api/web/app.py), each rate against its band mean ± z_threshold·σ.

The detector keeps one mean and σ per key, not their past; the replay history
(store/tick_history.py) keeps the values, not the baselines, in a file. This keeps, for the
newest `window` ticks, per table (DETECTOR_TABLES) the keys that had a value that tick, each with
its value and the baseline's mean and σ right after that tick's update.

Bounded by who fills it: any device on the LAN can make itself a key (one SYN), so a tick keeps
at most `max_keys` keys per table, the largest values first (those are what anyone would look
at); the rest are counted in `dropped` and shown as unknown, not as 0. Memory: window × tables ×
max_keys × ~20 bytes at most (600 × 3 × 128: ~5 MB), and ~0.1 MB on a quiet LAN.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

# The detector's rate tables (alerting/detector.py), what each key is
DETECTOR_TABLES = ("device_connects", "device_fan_out", "command_connects")  # read_model.CHART_TABLES
DEFAULT_MAX_KEYS = 128

Stats = Callable[[str, str], Optional[Tuple[float, float]]]  # (table, key) -> (mean, σ) or None


@dataclass(frozen=True)
class _TableTick:
    keys: Dict[str, int]  # key -> row of `rows`
    rows: np.ndarray  # float32 (n, 3): value, mean, σ
    truncated: bool  # keys beyond max_keys were left out: a missing key is unknown, not 0


@dataclass(frozen=True)
class _Tick:
    time_usec: int
    tables: Dict[str, _TableTick]
    totals: Tuple[float, ...]  # TOTALS, in order


# Per-tick figures of the whole host: connect() calls and failed ones (every command), new
# devices, alerts raised
TOTALS = ("connects", "failed", "new_devices", "alerts")


class TickSeries:
    def __init__(self, window: int, max_keys: int = DEFAULT_MAX_KEYS):
        self._ticks: Deque[_Tick] = deque(maxlen=window)
        self.max_keys = max_keys
        self.dropped = 0  # (tick, key) values left out by max_keys since the start

    @property
    def window(self) -> int:
        return self._ticks.maxlen or 0

    def resize(self, window: int) -> None:
        if window != self.window:
            self._ticks = deque(self._ticks, maxlen=window)

    def __len__(self) -> int:
        return len(self._ticks)

    def record(self, time_usec: int, values: Dict[str, Dict[str, float]], stats: Stats,
               totals: Dict[str, float]) -> None:
        """One tick: per table, the keys' values this tick (the detector's input), their baselines
        after the tick (`stats`), and the host's TOTALS."""
        tables = {}
        for table in DETECTOR_TABLES:
            observed = values.get(table, {})
            keys = [k for k, v in observed.items() if v]
            truncated = len(keys) > self.max_keys
            if truncated:
                keys.sort(key=lambda k: -observed[k])
                self.dropped += len(keys) - self.max_keys
                keys = keys[:self.max_keys]
            rows = np.zeros((len(keys), 3), dtype=np.float32)
            for i, key in enumerate(keys):
                mean_std = stats(table, key) or (0.0, 0.0)
                rows[i] = (observed[key], mean_std[0], mean_std[1])
            tables[table] = _TableTick({k: i for i, k in enumerate(keys)}, rows, truncated)
        self._ticks.append(_Tick(time_usec, tables, tuple(float(totals.get(name, 0)) for name in TOTALS)))

    def times(self) -> List[int]:
        return [t.time_usec for t in self._ticks]

    def series(self, table: str, key: str, now: Optional[Tuple[float, float]] = None) -> Dict[str, list]:
        """`key`'s values over the window, oldest first: 0 on a tick it had none, None where the
        tick left it out (max_keys). The band (mean, σ) at each tick is its baseline after that
        tick; on ticks it had no value, the last one before (the baseline learns from values, and
        a key with none does not move), and before its first value in the window `now`, the
        baseline as it is now (or none)."""
        out: Dict[str, list] = {"time_usec": [], "value": [], "mean": [], "std": []}
        band = None
        for tick in self._ticks:
            t = tick.tables.get(table)
            row = t.keys.get(key) if t is not None else None
            if row is not None:
                value, mean, std = (float(x) for x in t.rows[row])
                band = (mean, std)
            else:
                value = None if t is not None and t.truncated else 0.0
            out["time_usec"].append(tick.time_usec)
            out["value"].append(value)
            out["mean"].append(band[0] if band else None)
            out["std"].append(band[1] if band else None)
        if now is not None:  # before the first value in the window: the band as it stands now
            first = next((m for m in out["mean"] if m is not None), None)
            if first is None:
                out["mean"] = [now[0]] * len(out["mean"])
                out["std"] = [now[1]] * len(out["std"])
            else:
                for i, m in enumerate(out["mean"]):
                    if m is not None:
                        break
                    out["mean"][i], out["std"][i] = now
        return out

    def totals(self, since_usec: int = 0) -> Dict[str, list]:
        """The host's TOTALS per tick over the window, oldest first; only the ticks after
        `since_usec` when given (the live feed asks for the newest one after every tick)."""
        ticks: List[_Tick] = []
        for tick in reversed(self._ticks):
            if tick.time_usec <= since_usec:
                break
            ticks.append(tick)
        ticks.reverse()
        out: Dict[str, list] = {"time_usec": [t.time_usec for t in ticks]}
        for i, name in enumerate(TOTALS):
            out[name] = [t.totals[i] for t in ticks]
        return out
