"""Per-process connect counts over time (pure): kernel counter snapshots in, Summary out.

The kernel keeps cumulative counters per (pid, command). Each tick the daemon reads them;
CounterDeltas turns the cumulative values into increments, and ConnectHistory files each
increment under the second it was read. A window's total is then a difference of two running
sums found by bisection, so Summary costs O(log n) per process whatever the connect rate, and
memory grows with active (process, second) pairs, never with the number of connects.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Dict, Iterable, List, NamedTuple, Set, Tuple

ProcKeyT = Tuple[int, str]  # (pid, command): what Summary asks about
CounterKeyT = Tuple[int, int]  # (pid, generation): how the kernel tells counters apart


class Counts(NamedTuple):
    """connect() calls by final outcome (bpf/connect.h struct nw_counts), and UDP sends."""

    succeeded: int = 0
    refused: int = 0
    timed_out: int = 0
    other_failed: int = 0
    unknown: int = 0  # non-blocking connects whose handshake could not be followed
    udp_sends: int = 0

    @property
    def failed(self) -> int:
        return self.refused + self.timed_out + self.other_failed

    @property
    def attempts(self) -> int:
        """connect() calls with a known or unknown outcome (not those still in progress);
        unconnected UDP sends are their own kind and not included."""
        return self.succeeded + self.failed + self.unknown

    def __add__(self, other: "Counts") -> "Counts":  # type: ignore[override]
        return Counts(*(a + b for a, b in zip(self, other)))

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts(*(a - b for a, b in zip(self, other)))

    def any(self) -> bool:
        return any(self)


ZERO = Counts()


class CounterDeltas:
    """Turns cumulative kernel counters into increments since the previous read.

    Kernel counters only grow, so a smaller value can only be a read that raced with the
    kernel moving an entry (see bpf/connect.h, retired_counts): it is ignored, and the next
    consistent read yields the increment. Counters we delete are forgotten, so a re-created
    one counts from zero.
    """

    def __init__(self) -> None:
        self._last: Dict[CounterKeyT, Counts] = {}

    def update(self, snapshot: Dict[CounterKeyT, Counts]) -> Dict[CounterKeyT, Counts]:
        deltas = {}
        for key, now in snapshot.items():
            before = self._last.get(key, ZERO)
            if now == before:
                continue
            high = Counts(*(max(a, b) for a, b in zip(now, before)))
            diff = high - before
            if diff.any():
                deltas[key] = diff
            self._last[key] = high
        return deltas

    def forget(self, keys: Iterable[CounterKeyT]) -> None:
        for key in keys:
            self._last.pop(key, None)

    def unchanged_keys(self, snapshot: Dict[CounterKeyT, Counts]) -> Set[CounterKeyT]:
        return {k for k, v in snapshot.items() if self._last.get(k) == v}


@dataclass
class _Series:
    """Running totals of one process, one entry per second in which it had activity."""

    seconds: List[int]
    totals: List[Counts]

    def total_at_or_before(self, second: int) -> Counts:
        i = bisect.bisect_right(self.seconds, second)
        return self.totals[i - 1] if i else ZERO


class ConnectHistory:
    def __init__(self, max_window_sec: int) -> None:
        self.max_window_sec = max_window_sec
        self._series: Dict[ProcKeyT, _Series] = {}
        self._by_pid: Dict[int, Set[ProcKeyT]] = {}
        self._by_command: Dict[str, Set[ProcKeyT]] = {}
        self.total = ZERO  # everything ever recorded, for status

    def record(self, second: int, deltas: Dict[ProcKeyT, Counts]) -> None:
        for key, delta in deltas.items():
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series([], [])
                self._by_pid.setdefault(key[0], set()).add(key)
                self._by_command.setdefault(key[1], set()).add(key)
            last = series.totals[-1] if series.totals else ZERO
            if series.seconds and series.seconds[-1] >= second:
                series.totals[-1] = last + delta  # same second (or a clock step back): merge
            else:
                series.seconds.append(second)
                series.totals.append(last + delta)
            self.total = self.total + delta

    def summary(self, now_second: int, duration_sec: int, pid: int = 0, command: str = "") -> Counts:
        """Counts in the last duration_sec seconds, by pid (all its commands) or by command."""
        keys = self._by_pid.get(pid, ()) if pid else self._by_command.get(command, ())
        start = now_second - duration_sec  # entries at seconds > start are inside the window
        result = ZERO
        for key in keys:
            series = self._series[key]
            result = result + (series.totals[-1] - series.total_at_or_before(start))
        return result

    def commands_of(self, pid: int) -> List[str]:
        return sorted(key[1] for key in self._by_pid.get(pid, ()))

    def prune(self, now_second: int) -> None:
        """Forget what no window can reach any more; keeps memory flat over time."""
        horizon = now_second - self.max_window_sec
        for key in list(self._series):
            series = self._series[key]
            cut = bisect.bisect_right(series.seconds, horizon)
            if cut == len(series.seconds):
                self._drop(key)
            elif cut > 1:
                # keep one entry at or before the horizon: it is the base of the oldest window
                del series.seconds[: cut - 1]
                del series.totals[: cut - 1]

    def _drop(self, key: ProcKeyT) -> None:
        del self._series[key]
        for index, part in ((self._by_pid, key[0]), (self._by_command, key[1])):
            members = index.get(part)
            if members is not None:
                members.discard(key)
                if not members:
                    del index[part]

    def __len__(self) -> int:
        return len(self._series)

