"""Connect latency (SYN sent -> established): per-window percentiles for Summary, and the kernel's
log2 histograms per (command, destination) folded per command for Prometheus (pure).

Summary's percentiles come from the latency of each established handshake (carried by the
records), filed per (pid, command) and second in buckets 1/16 of an octave wide: a percentile
is then within 3% of the true value whatever the window, and memory grows with active
(process, second, bucket) triples, never with the number of connects.
"""
from __future__ import annotations

import bisect
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from netwatchd.connects.history import ProcKeyT

SUB_BUCKETS = 16  # per octave: a bucket spans at most 1/16 of its lower bound
_SUB_BITS = 4
QUANTILES = (0.5, 0.9, 0.99)


def bucket_of(usec: int) -> int:
    """Buckets 0..15 hold 0..15 us exactly; above, 16 buckets per power of two."""
    if usec < SUB_BUCKETS:
        return max(0, usec)
    octave = usec.bit_length() - 1  # >= 4
    mantissa = usec >> (octave - _SUB_BITS)  # 16..31
    return SUB_BUCKETS * (octave - _SUB_BITS + 1) + (mantissa - SUB_BUCKETS)


def buckets_of(usec: np.ndarray) -> np.ndarray:
    """bucket_of for a whole array at once (the record path files a drain's latencies together)."""
    usec = np.maximum(np.asarray(usec, dtype=np.int64), 0)
    octave = np.frexp(np.maximum(usec, 1).astype(np.float64))[1].astype(np.int64) - 1  # exact below 2**53
    shift = np.maximum(octave - _SUB_BITS, 0)
    mantissa = usec >> shift
    return np.where(usec < SUB_BUCKETS, usec, SUB_BUCKETS * (octave - _SUB_BITS + 1) + (mantissa - SUB_BUCKETS))


def bucket_bounds(bucket: int) -> Tuple[int, int]:
    """[low, high) microseconds of a bucket."""
    if bucket < SUB_BUCKETS:
        return bucket, bucket + 1
    octave = bucket // SUB_BUCKETS - 1 + _SUB_BITS
    mantissa = SUB_BUCKETS + bucket % SUB_BUCKETS
    width = 1 << (octave - _SUB_BITS)
    return mantissa * width, (mantissa + 1) * width


def percentile(buckets: Dict[int, int], q: float) -> int:
    """The q-quantile (0 < q <= 1) in microseconds, interpolated inside its bucket; 0 if empty."""
    total = sum(buckets.values())
    if not total:
        return 0
    rank = q * total  # the rank-th smallest sample, counted from 1 (a fraction interpolates)
    seen = 0
    for bucket in sorted(buckets):
        n = buckets[bucket]
        if seen + n >= rank:
            low, high = bucket_bounds(bucket)
            if high - low == 1:
                return low  # an exact value
            return int(low + (high - low) * (rank - seen) / n)
        seen += n
    return bucket_bounds(max(buckets))[0]


class LatencyHistory:
    """Established-handshake latencies per (pid, command) and second, for window percentiles."""

    def __init__(self, max_window_sec: int) -> None:
        self.max_window_sec = max_window_sec
        self._seconds: Dict[ProcKeyT, List[int]] = {}
        self._buckets: Dict[ProcKeyT, List[Dict[int, int]]] = {}

    def add(self, second: int, key: ProcKeyT, usec: int) -> None:
        self.add_count(second, key, bucket_of(usec), 1)

    def add_count(self, second: int, key: ProcKeyT, bucket: int, n: int) -> None:
        """n handshakes of one bucket (the record path groups a drain's latencies first)."""
        seconds = self._seconds.setdefault(key, [])
        buckets = self._buckets.setdefault(key, [])
        if not seconds or seconds[-1] < second:
            seconds.append(second)
            buckets.append({})
        cell = buckets[-1]  # same second, or a clock step back: the newest second takes it
        cell[bucket] = cell.get(bucket, 0) + n

    def window(self, now_second: int, duration_sec: int, keys: Iterable[ProcKeyT]) -> Dict[int, int]:
        """Bucket counts of the seconds in (now - duration, now] for these (pid, command) keys."""
        start = now_second - duration_sec
        out: Dict[int, int] = {}
        for key in keys:
            seconds = self._seconds.get(key)
            if not seconds:
                continue
            for cell in self._buckets[key][bisect.bisect_right(seconds, start):]:
                for b, n in cell.items():
                    out[b] = out.get(b, 0) + n
        return out

    def keys(self, pid: int = 0, command: str = "") -> List[ProcKeyT]:
        return [k for k in self._seconds if (k[0] == pid if pid else k[1] == command)]

    def prune(self, now_second: int) -> None:
        horizon = now_second - self.max_window_sec
        for key in list(self._seconds):
            cut = bisect.bisect_right(self._seconds[key], horizon)
            if cut == len(self._seconds[key]):
                del self._seconds[key], self._buckets[key]
            elif cut:
                del self._seconds[key][:cut], self._buckets[key][:cut]


def summary_percentiles(buckets: Dict[int, int]) -> Dict[str, int]:
    answer = {f"latency_p{int(q * 100)}_usec": percentile(buckets, q) for q in QUANTILES}
    answer["latency_samples"] = sum(buckets.values())
    return answer


# -- the kernel's log2 histograms -----------------------------------------------------------------
LOG2_SLOTS = 40  # bpf/connect.h NW_LATENCY_SLOTS: slot k holds [2^(k-1), 2^k) us, slot 0 holds 0 us


class Log2Histogram:
    __slots__ = ("slots", "sum_usec")

    def __init__(self) -> None:
        self.slots = [0] * LOG2_SLOTS
        self.sum_usec = 0

    @property
    def count(self) -> int:
        return sum(self.slots)

    def cumulative(self) -> List[Tuple[float, int]]:
        """(upper bound in seconds, handshakes at or below it) per slot, as Prometheus' le."""
        out, running = [], 0
        for slot, n in enumerate(self.slots):
            running += n
            out.append(((1 << slot) / 1e6, running))
        return out

    def add(self, other: "Log2Histogram") -> None:
        self.slots = [a + b for a, b in zip(self.slots, other.slots)]
        self.sum_usec += other.sum_usec


def by_command(cells: Dict[Tuple, Dict[int, Tuple[int, int]]]) -> Dict[str, Log2Histogram]:
    """Fold the kernel's (command, family, address, port) cells -- {slot: (count, sum of us)} --
    into one histogram per command."""
    out: Dict[str, Log2Histogram] = {}
    for key, slots in cells.items():
        hist = out.setdefault(key[0], Log2Histogram())
        for slot, (count, sum_usec) in slots.items():
            if 0 <= slot < LOG2_SLOTS:
                hist.slots[slot] += count
                hist.sum_usec += sum_usec
    return out


def highest_slot_used(hists: Iterable[Log2Histogram]) -> Optional[int]:
    used = [i for h in hists for i, n in enumerate(h.slots) if n]
    return max(used) if used else None
