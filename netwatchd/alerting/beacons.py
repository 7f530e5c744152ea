"""Beacons (pure): the pair table of connection starts and the `beacon` alerts it raises.

Each tick's observation carries the connection starts it saw, per (source, destination, port):
source "command:<name>" (from connect() records) or "device:<mac>" (from the kernel's per
(device, peer, port) last-SYN map). The tracker keeps, per pair, the newest KEEP start times
(milliseconds in an int32 ring, 128 bytes a pair) within the horizon, and after each tick scores
the pairs that got new starts (netwatchd.alerting.beacon_score), all at once in numpy. A pair
that scores at or above the threshold on CONSECUTIVE scorings in a row, with enough connections
and a period no shorter than the minimum, is a beacon: one alert per pair while it is tracked,
and not again for the same subject and destination within alerts.cooldown_sec (also across a
restart: the restored alert log seeds that).

Bounded: at most max_pairs; when full, pairs idle beyond the horizon go first, then the ones with
the fewest starts in it (the least evidence), oldest first. Those are counted in `dropped`. The
beacons already reported are kept only while their cooldown can suppress one.
The allow-list is netwatchd.beacon_allow; DNS names allow a pair only with
beacons.trust_dns_names (a device chooses the names its DNS answers carry).
Live and replay run the same code on the same observations, so replay finds the same beacons.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set, Tuple

import numpy as np

from netwatchd.alerting.alerts import Alert, AlertIds
from netwatchd.alerting.beacon_score import regularity
from netwatchd.beacon_allow import AllowList
from netwatchd.config import BeaconsConfig

KEEP = 32  # newest starts kept per pair: 31 intervals
CONSECUTIVE = 2  # scorings in a row at or above the threshold: one lucky draw is not a beacon
MAX_STARTS_PER_TICK = 8  # per pair in one observation (more is a poll loop, never a beacon)
# Connects of one pair closer than this fraction of min_period_sec are one start: glibc's
# getaddrinfo() connect()s a UDP socket to each address it sorts (RFC 6724), so one `curl` call
# is a UDP and a TCP connect to the same address and port microseconds apart; a client may
# retry at once. Counted twice, each beacon period would hold a ~0 s interval.
COALESCE_FRACTION = 0.25
INT32_SPAN_MS = 1 << 30  # rebase the ring's clock before int32 milliseconds run out
NEVER = np.iinfo(np.int64).max // 2  # last_ms of a free slot: never idle, never expired again

PairKey = Tuple[str, str, int]  # (source, destination address, port)


@dataclass(frozen=True)
class Beacon:
    source: str
    destination: str
    port: int
    name: str
    period_sec: float
    jitter_sec: float
    skew: float
    count: int
    score: float

    @property
    def where(self) -> str:
        host = f"[{self.destination}]" if ":" in self.destination else self.destination
        return f"{host}:{self.port}"


def beacon_alert(b: Beacon, ids: AlertIds, now_usec: int) -> Alert:
    kind, _, who = b.source.partition(":")
    called = f"{b.where} ({b.name})" if b.name else b.where
    message = (f"{kind} {who} connects to {called} every {b.period_sec:.3g} s (jitter {b.jitter_sec:.2g} s, "
               f"{b.count} connections, score {b.score:.2f}): regular like a beacon calling home")
    details = {"destination": b.where, "address": b.destination, "port": str(b.port), "name": b.name,
               "period_sec": f"{b.period_sec:.3f}", "jitter_sec": f"{b.jitter_sec:.3f}", "skew": f"{b.skew:.3f}",
               "count": str(b.count), "score": f"{b.score:.3f}", "command" if kind == "command" else "mac": who}
    return Alert(ids.next(), "beacon", b.source, now_usec, message, float(b.count), round(b.period_sec, 3),
                 round(b.score, 3), details)


class BeaconTracker:
    def __init__(self, cfg: BeaconsConfig, capacity: int = 1024):
        self._keys: List[Optional[PairKey]] = []
        self._names: List[str] = []
        self._index: Dict[PairKey, int] = {}
        self._free: List[int] = []
        self.starts = np.zeros((0, KEEP), dtype=np.int32)  # ms since epoch_ms, a ring per pair
        self.head = np.zeros(0, dtype=np.int64)  # next slot of the ring
        self.filled = np.zeros(0, dtype=np.int64)
        self.last_ms = np.zeros(0, dtype=np.int64)  # newest start, ms since epoch_ms
        self.streak = np.zeros(0, dtype=np.int64)
        self.alerted = np.zeros(0, dtype=bool)
        self.epoch_ms: Optional[int] = None
        self.dropped = 0  # pairs pushed out by max_pairs while still active
        self.reported: Dict[Tuple[str, str], int] = {}  # (subject, destination) -> last alert usec
        self._reported_checked = -1  # the minute `reported` was last rid of expired entries
        self._grow(capacity)
        self.reconfigure(cfg)

    def reconfigure(self, cfg: BeaconsConfig) -> None:
        self.cfg = cfg
        self.allow = AllowList(cfg.allow_destinations, cfg.allow_names, cfg.allow_commands, cfg.trust_dns_names)
        self._allowed: Set[Tuple[PairKey, str]] = set()  # (pair, name)s the allow list allowed
        now_allowed = [slot for key, slot in self._index.items()
                       if self.allow.allows(key[0], key[1], key[2], self._names[slot])]
        self._release(now_allowed)  # an entry added by a reload silences its pairs at once

    def __len__(self) -> int:
        return len(self._index)

    def remember_alerts(self, alerts: Iterable[Alert]) -> None:
        """Beacons already reported (the restored alert log): not reported again within the cooldown."""
        for a in alerts:
            if a.kind == "beacon":
                key = (a.subject, a.details.get("destination", ""))
                self.reported[key] = max(self.reported.get(key, 0), a.timestamp_usec)

    # -- the table -----------------------------------------------------------------------------
    def _grow(self, capacity: int) -> None:
        old = len(self.head)
        if capacity <= old:
            return
        pad = capacity - old
        self.starts = np.vstack([self.starts, np.zeros((pad, KEEP), dtype=np.int32)])
        for name in ("head", "filled", "last_ms", "streak", "alerted"):
            arr = getattr(self, name)
            setattr(self, name, np.concatenate([arr, np.zeros(pad, dtype=arr.dtype)]))
        self.last_ms[old:] = NEVER
        self._keys += [None] * pad
        self._names += [""] * pad
        self._free += list(range(capacity - 1, old - 1, -1))

    def _release(self, slots: Iterable[int]) -> None:
        for s in slots:
            key = self._keys[s]
            if key is not None:
                del self._index[key]
                self._keys[s] = None
                self.last_ms[s] = NEVER
                self._free.append(int(s))
        # (the arrays are reset when the slot is taken again)

    def _make_room(self, now_ms: int, protect: List[int]) -> None:
        """Free a batch of slots: idle pairs first, then the least evidence, oldest first; never
        one that already has starts of this tick (`protect`)."""
        used = np.flatnonzero(np.array([k is not None for k in self._keys]))
        used = used[~np.isin(used, np.asarray(protect, dtype=np.int64))]
        horizon_ms = self.cfg.horizon_sec * 1000
        idle = self.last_ms[used] < now_ms - horizon_ms
        order = np.lexsort((self.last_ms[used], self.filled[used], ~idle))
        batch = max(1, len(used) // 64)
        chosen = used[order[:batch]]
        self.dropped += int(np.count_nonzero(~idle[order[:batch]]))
        self._release(chosen)

    def _slot(self, key: PairKey, name: str, now_ms: int, protect: List[int]) -> Optional[int]:
        """A place for a new pair (None: none can be freed this tick)."""
        if not self._free:
            if len(self.head) < self.cfg.max_pairs:
                self._grow(min(self.cfg.max_pairs, max(1024, 2 * len(self.head))))
            else:
                self._make_room(now_ms, protect)
        if not self._free:
            return None
        slot = self._free.pop()
        self._keys[slot], self._names[slot], self._index[key] = key, name, slot
        self.head[slot] = self.filled[slot] = self.streak[slot] = 0
        self.last_ms[slot] = now_ms - self.cfg.horizon_sec * 1000  # older starts are out anyway
        self.alerted[slot] = False
        return slot

    def _is_allowed(self, key: PairKey, name: str) -> bool:
        """Only the allowed answers are remembered: a pair that is not allowed takes a slot and is
        found through _index from then on, so remembering it too would cost a second entry per
        tracked pair (about 20 MB at 100k pairs) to save nothing."""
        if (key, name) in self._allowed:
            return True
        if not self.allow.allows(key[0], key[1], key[2], name):
            return False
        if len(self._allowed) >= max(self.cfg.max_pairs, 1024):
            self._allowed.clear()
        self._allowed.add((key, name))
        return True

    def _clock(self, now_ms: int) -> None:
        if self.epoch_ms is None:
            self.epoch_ms = now_ms - 2 * self.cfg.horizon_sec * 1000
        elif now_ms - self.epoch_ms > INT32_SPAN_MS:
            shift = now_ms - 2 * self.cfg.horizon_sec * 1000 - self.epoch_ms
            floor = np.iinfo(np.int32).min + 1
            self.starts[:] = np.maximum(self.starts.astype(np.int64) - shift, floor).astype(np.int32)
            self.last_ms -= shift
            self.epoch_ms += shift

    # -- a tick ------------------------------------------------------------------------------
    def tick(self, starts: List[list], now_usec: int, ids: AlertIds, alerting: bool = True,
             cooldown_sec: int = 0) -> List[Alert]:
        """File one observation's starts; returns the beacon alerts they complete."""
        if not self.cfg.enabled:
            return []
        now_abs = now_usec // 1000
        self._clock(now_abs)
        now_ms = now_abs - self.epoch_ms
        self._expire(now_ms)  # first: a pair idle past the horizon starts afresh below
        coalesce_ms = self.cfg.min_period_sec * 1000 * COALESCE_FRACTION
        slots, times = [], []
        for source, destination, port, name, when in starts:
            key = (sys.intern(str(source)), str(destination), int(port))  # one copy of each source
            slot = self._index.get(key)  # a tracked pair is not allowed (reconfigure drops those)
            if slot is None:
                if self._is_allowed(key, name):
                    continue
                slot = self._slot(key, name, now_ms, slots)
                if slot is None:  # every place holds a pair with starts in this very tick
                    self.dropped += 1
                    continue
            elif name:
                self._names[slot] = name
            last = int(self.last_ms[slot])
            for t in sorted(when)[-MAX_STARTS_PER_TICK:]:
                t_ms = int(t) // 1000 - self.epoch_ms
                if t_ms - last < coalesce_ms:  # the same start (or an older one, out of order)
                    continue
                slots.append(slot)
                times.append(t_ms)
                last = t_ms
        self._forget_reported(now_usec, cooldown_sec)
        if not slots:
            return []
        dirty = self._file(np.asarray(slots, dtype=np.int64), np.asarray(times, dtype=np.int64))
        found = self._score(dirty, now_ms)
        alerts = []
        for b in found:
            key = (b.source, b.where)
            last = self.reported.get(key)
            if last is not None and now_usec - last < cooldown_sec * 1_000_000:
                continue
            if alerting:
                self.reported[key] = now_usec
                alerts.append(beacon_alert(b, ids, now_usec))
        return alerts

    def _forget_reported(self, now_usec: int, cooldown_sec: int) -> None:
        """Once a minute of observation time: a beacon reported longer ago than the cooldown
        suppresses nothing any more, so `reported` holds at most a cooldown's alerts."""
        minute = now_usec // 60_000_000
        if minute == self._reported_checked:
            return
        self._reported_checked = minute
        horizon = cooldown_sec * 1_000_000
        self.reported = {key: usec for key, usec in self.reported.items() if now_usec - usec < horizon}

    def _expire(self, now_ms: int) -> None:
        idle = np.flatnonzero(self.last_ms < now_ms - self.cfg.horizon_sec * 1000)
        if len(idle):
            self._release(idle)

    def _file(self, slots: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Append starts to their rings (in time order, skipping any older than the ring's newest)."""
        keep = times > self.last_ms[slots]
        slots, times = slots[keep], times[keep]
        if not len(slots):
            return slots
        order = np.lexsort((times, slots))
        slots, times = slots[order], times[order]
        first = np.r_[True, slots[1:] != slots[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(slots)), 0))
        rank = np.arange(len(slots)) - group_start
        self.starts[slots, (self.head[slots] + rank) % KEEP] = times.astype(np.int32)
        dirty, counts = np.unique(slots, return_counts=True)
        self.head[dirty] = (self.head[dirty] + counts) % KEEP
        self.filled[dirty] = np.minimum(KEEP, self.filled[dirty] + counts)
        last = np.r_[slots[1:] != slots[:-1], True]
        self.last_ms[slots[last]] = times[last]
        return dirty

    def _score(self, dirty: np.ndarray, now_ms: int) -> List[Beacon]:
        cfg = self.cfg
        cols = np.arange(KEEP)
        ring = (self.head[dirty, None] + cols[None, :]) % KEEP  # oldest .. newest
        t = np.take_along_axis(self.starts[dirty], ring, axis=1).astype(np.float64)
        valid = (cols[None, :] >= KEEP - self.filled[dirty, None]) & (t >= now_ms - cfg.horizon_sec * 1000)
        t = np.where(valid, t / 1000.0, np.nan)
        r = regularity(np.diff(t, axis=1))
        eligible = (r.count >= cfg.min_connections - 1) & (r.period >= cfg.min_period_sec)
        hot = eligible & (r.score >= cfg.score_threshold)
        self.streak[dirty] = np.where(hot, self.streak[dirty] + 1, 0)
        fire = hot & (self.streak[dirty] >= CONSECUTIVE) & ~self.alerted[dirty]
        found = []
        for i in np.flatnonzero(fire):
            slot = int(dirty[i])
            self.alerted[slot] = True
            source, destination, port = self._keys[slot]
            found.append(Beacon(source, destination, port, self._names[slot], float(r.period[i]),
                                float(r.jitter[i]), float(r.skew[i]), int(r.count[i]) + 1, float(r.score[i])))
        return found

    def memory_bytes(self) -> int:
        arrays = (self.starts, self.head, self.filled, self.last_ms, self.streak, self.alerted)
        return int(sum(a.nbytes for a in arrays))
