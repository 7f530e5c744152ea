"""Beacons (pure): the pair table of connection starts and the `beacon` alerts it raises.

Each tick's observation carries the connection starts it saw, per (source, destination, port):
source "command:<name>" (from connect() records: TickObservation.command_starts, columns) or
"device:<mac>" (from the kernel's per (device, peer, port) last-SYN map: connection_starts,
lists); the core hands both over as one StartColumns (netwatchd/start_columns.py).
A tick is a few numpy passes over its starts, with no Python work per start or per pair: the
pairs are found in the table at once (netwatchd/alerting/pair_table.py: a sorted hash index,
keys verified exactly), new ones checked against the allow-list per rule and per distinct
source (netwatchd/alerting/allow_columns.py), and the pairs that got new starts scored together
(netwatchd.alerting.beacon_score). A pair that scores at or above the threshold on CONSECUTIVE
scorings in a row, with enough connections and a period no shorter than the minimum, is a
beacon: one alert per pair while it is tracked, and not again for the same subject and
destination within alerts.cooldown_sec (also across a restart: the restored alert log seeds that).

Per pair, about 97 bytes at 100k pairs (memory_bytes() counts them all): the newest start (int32
ms since epoch_ms, 4), the up to KEEP - 1 intervals before it (float16 in units of 10 s, 62:
within 0.05% of the true interval, up to 655040 s, past the longest horizon; beyond it: inf),
a byte of flags (starts filed, whether the last scoring was hot, alerted), the key (source id
and family 4, port 2, address 16) and its place in the index (hash 4, slot 4); names, for the
pairs that have one, and the distinct sources besides. The starts a score takes are those within
the horizon counted back from the newest through the stored intervals, less their rounding: a
start older than horizon_sec never counts (one within 0.05% of its age from the edge may not
either). The arrays are allocated for the table's capacity, grown an eighth ahead up to max_pairs.

Bounded: at most max_pairs; when full, pairs idle beyond the horizon go first, then the ones with
the fewest starts (the least evidence), oldest first, never one with starts in this tick. Those
are counted in `dropped`. The beacons already reported are kept only while their cooldown can
suppress one. The allow-list is netwatchd.beacon_allow; DNS names allow a pair only with
beacons.trust_dns_names (a device chooses the names its DNS answers carry).
Live and replay run the same code on the same observations, so replay finds the same beacons.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from netwatchd.alerting.alerts import Alert, AlertIds
from netwatchd.alerting.allow_columns import AllowColumns, halves
from netwatchd.alerting.beacon_score import regularity
from netwatchd.alerting.pair_table import PairTable, put_rows, take_rows
from netwatchd.beacon_allow import AllowList
from netwatchd.config import BeaconsConfig
from netwatchd.start_columns import StartColumns, address_text

KEEP = 32  # newest starts kept per pair: 31 intervals
INTERVALS = KEEP - 1
# scorings in a row at or above the threshold: one lucky draw is not a beacon (a pair's flags
# keep whether its last scoring was hot: that is all 2 takes)
CONSECUTIVE = 2
MAX_STARTS_PER_TICK = 8  # per pair in one observation (more is a poll loop, never a beacon)
# Connects of one pair closer than this fraction of min_period_sec are one start: glibc's
# getaddrinfo() connect()s a UDP socket to each address it sorts (RFC 6724), so one `curl` call
# is a UDP and a TCP connect to the same address and port microseconds apart; a client may
# retry at once. Counted twice, each beacon period would hold a ~0 s interval.
COALESCE_FRACTION = 0.25
INTERVAL_UNIT_MS = 10_000  # the stored intervals' unit: float16 then reaches 655040 s
ROUNDING = 2.0 ** -11  # float16's rounding, relative: at most half its 10-bit mantissa's last place
INT32_SPAN_MS = 1 << 30  # rebase the clock before int32 milliseconds run out
INT32_MIN = int(np.iinfo(np.int32).min)
FREE = int(np.iinfo(np.int32).max)  # last_ms of a free slot: never idle, never expired again
NO_TIME = -(1 << 62)  # no start in this place of a tick's grid: never past the coalescing distance
COUNT, HOT, ALERTED = 0x3F, 0x40, 0x80  # flags: starts filed (at most KEEP), the last scoring hot, alerted

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
        self.table = PairTable()  # who each slot is: source, address, port, name; the hash index
        self.last_ms = np.zeros(0, dtype=np.int32)  # newest start, ms since epoch_ms; FREE: no pair
        self.intervals = np.zeros((0, INTERVALS), dtype=np.float16)  # oldest .. newest, NaN: none
        self.flags = np.zeros(0, dtype=np.uint8)  # COUNT | HOT | ALERTED
        self._used = 0
        self.epoch_ms: Optional[int] = None
        self.dropped = 0  # pairs pushed out by max_pairs while still active
        self.reported: Dict[Tuple[str, str], int] = {}  # (subject, destination) -> last alert usec
        self._reported_checked = -1  # the minute `reported` was last rid of expired entries
        self._grow(capacity)
        self.reconfigure(cfg)

    def reconfigure(self, cfg: BeaconsConfig) -> None:
        self.cfg = cfg
        self.allow = AllowColumns(AllowList(cfg.allow_destinations, cfg.allow_names, cfg.allow_commands,
                                            cfg.trust_dns_names))
        used = self._used_slots()
        if len(used):  # an entry added by a reload silences its pairs at once
            t = self.table
            at = np.full(len(self.last_ms), -1, dtype=np.int64)
            at[used] = np.arange(len(used))
            names = {int(at[s]): name for s, name in t.names.items() if at[s] >= 0}
            meta = t.meta[used]
            allowed = self.allow.pairs(self.allow.commands(t.sources)[meta >> 1], np.where(meta & 1, 6, 4),
                                       halves(t.address_bytes(used)), t.port[used], names)
            self._release(used[allowed])

    def __len__(self) -> int:
        return self._used

    def __contains__(self, pair: PairKey) -> bool:
        """(source, destination address, port): tracked now?"""
        cols = StartColumns.from_lists([[pair[0], pair[1], pair[2], "", [0]]])
        if not len(cols) or pair[0] not in self.table.sources:
            return False
        return bool(self.table.find(*self._keys(cols))[0] >= 0)

    def remember_alerts(self, alerts: Iterable[Alert]) -> None:
        """Beacons already reported (the restored alert log): not reported again within the cooldown."""
        for a in alerts:
            if a.kind == "beacon":
                key = (a.subject, a.details.get("destination", ""))
                self.reported[key] = max(self.reported.get(key, 0), a.timestamp_usec)

    # -- the table -----------------------------------------------------------------------------
    def _used_slots(self) -> np.ndarray:
        return np.flatnonzero(self.last_ms != FREE)

    def _grow(self, capacity: int) -> None:
        pad = capacity - len(self.last_ms)
        if pad <= 0:
            return
        self.table.grow(capacity)
        self.last_ms = np.concatenate([self.last_ms, np.full(pad, FREE, dtype=np.int32)])
        self.intervals = np.concatenate([self.intervals, np.full((pad, INTERVALS), np.nan, dtype=np.float16)])
        self.flags = np.concatenate([self.flags, np.zeros(pad, dtype=np.uint8)])

    def _release(self, slots: np.ndarray) -> None:
        if len(slots):
            self.last_ms[slots] = FREE
            self.flags[slots] = 0
            self.table.remove(slots)
            self._used -= len(slots)
        # (the intervals are reset when the slot is taken again)

    def _make_room(self, now_ms: int, protect: np.ndarray, need: int) -> None:
        """Free at least `need` slots, a batch: idle pairs first, then the least evidence, oldest
        first; never one with starts in this tick (`protect`)."""
        mask = self.last_ms != FREE
        mask[protect] = False
        used = np.flatnonzero(mask)
        idle = self.last_ms[used] < now_ms - self.cfg.horizon_sec * 1000
        order = np.lexsort((self.last_ms[used], self.flags[used] & COUNT, ~idle))
        chosen = order[:max(need, len(used) // 64, 1)]
        self.dropped += int(np.count_nonzero(~idle[chosen]))
        self._release(used[chosen])

    def _free_slots(self, wanted: int, now_ms: int, protect: np.ndarray) -> np.ndarray:
        """Up to `wanted` free slots, lowest first: the table grows up to max_pairs (an eighth ahead
        of the need), then makes room."""
        capacity = len(self.last_ms)
        if capacity - self._used < wanted and capacity < self.cfg.max_pairs:
            need = self._used + wanted
            self._grow(min(self.cfg.max_pairs, max(1024, need + need // 8, capacity + capacity // 8)))
        short = wanted - (len(self.last_ms) - self._used)
        if short > 0:
            self._make_room(now_ms, protect, short)
        return np.flatnonzero(self.last_ms == FREE)[:wanted]

    def _clock(self, now_ms: int) -> None:
        back = min(2 * self.cfg.horizon_sec * 1000, INT32_SPAN_MS // 2)
        if self.epoch_ms is None:
            self.epoch_ms = now_ms - back
        elif now_ms - self.epoch_ms > INT32_SPAN_MS:
            shift = now_ms - back - self.epoch_ms
            used = self.last_ms != FREE
            self.last_ms[used] = np.maximum(self.last_ms[used].astype(np.int64) - shift, INT32_MIN + 1)
            self.epoch_ms += shift

    # -- a tick ------------------------------------------------------------------------------
    def tick(self, starts: Union[StartColumns, List[list]], now_usec: int, ids: AlertIds, alerting: bool = True,
             cooldown_sec: int = 0) -> List[Alert]:
        """File one observation's starts (columns, or connection_starts lists); returns the beacon
        alerts they complete."""
        if not self.cfg.enabled:
            return []
        if not isinstance(starts, StartColumns):
            starts = StartColumns.from_lists(starts)
        now_abs = now_usec // 1000
        self._clock(now_abs)
        now_ms = now_abs - self.epoch_ms
        self._expire(now_ms)  # first: a pair idle past the horizon starts afresh below
        if len(self.table.sources) > max(1024, 2 * self._used):
            self.table.compact_sources(self._used_slots())
        dirty = self._take(starts, now_ms) if len(starts) else np.zeros(0, dtype=np.int64)
        self._forget_reported(now_usec, cooldown_sec)
        if not len(dirty):
            return []
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

    def _keys(self, cols: StartColumns) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each row's key in the table's terms (meta, port, address words) and its hash."""
        sid = self.table.intern(cols.sources)[cols.source]
        meta = (sid.astype(np.uint32) << np.uint32(1)) | (cols.family == 6).astype(np.uint32)
        port = cols.port.astype(np.uint16, copy=False)
        addr = np.ascontiguousarray(cols.address, dtype=np.uint8).view(np.uint64)
        return meta, port, addr, self.table.hash(meta, port, addr)

    def _take(self, cols: StartColumns, now_ms: int) -> np.ndarray:
        """Each start to its pair's slot (new pairs placed, allowed ones left out); the slots that
        got starts."""
        meta, port, addr, h = self._keys(cols)
        order = np.argsort(h)  # by hash: the lookups in order, and each pair's starts side by side
        meta, port, addr, h = meta[order], port[order], take_rows(addr, order), h[order]
        slot = self.table.find(meta, port, addr, h)  # a tracked pair is not allowed (reconfigure drops those)
        at = np.empty(len(order), dtype=np.int64)  # row -> its place in hash order
        at[order] = np.arange(len(order))
        named = [(int(at[row]), name) for row, name in sorted(cols.names.items()) if name]
        new = np.flatnonzero(slot < 0)
        if len(new):
            names = [(int(np.searchsorted(new, i)), name) for i, name in named if slot[i] < 0]
            slot[new] = self._place(cols, order[new], (meta[new], port[new], take_rows(addr, new), h[new]), names,
                                    slot[slot >= 0], now_ms)
        for i, name in named:  # the newest name a pair was looked up by
            if slot[i] >= 0:
                self.table.names[int(slot[i])] = name
        keep = slot >= 0
        slot, h = slot[keep], h[keep]
        together = not np.any((h[1:] == h[:-1]) & (slot[1:] != slot[:-1]))  # no two pairs of one hash mixed
        return self._file(slot, cols.time_usec[order[keep]] // 1000 - self.epoch_ms, together)

    def _place(self, cols: StartColumns, rows: np.ndarray, keys: tuple, names: List[Tuple[int, str]],
               protect: np.ndarray, now_ms: int) -> np.ndarray:
        """Slots for the `rows` of pairs not tracked yet (their `keys`, sorted by hash; `names`
        [(key index, name)]): -1 for an allowed pair or one with no room, the pairs placed in the
        order of their first rows."""
        meta, port, addr, h = keys
        group, one = PairTable.group(meta, port, addr, h, rows)
        rep = rows[one]
        allowed = self.allow.pairs(self.allow.commands(cols.sources)[cols.source[rep]], cols.family[rep],
                                   halves(take_rows(cols.address, rep)), cols.port[rep],
                                   {int(group[i]): name for i, name in names})
        place = np.flatnonzero(~allowed)
        out = np.full(len(one), -1, dtype=np.int64)
        if len(place):
            got = self._free_slots(len(place), now_ms, protect)
            self.dropped += len(place) - len(got)  # every place holds a pair with starts in this very tick
            place = place[:len(got)]
            out[place] = got
            self.last_ms[got] = now_ms - self.cfg.horizon_sec * 1000  # older starts are out anyway
            put_rows(self.intervals, got, np.full((1, INTERVALS), np.nan, dtype=np.float16))
            self.flags[got] = 0
            self._used += len(got)
            k = one[place]
            self.table.insert(got, meta[k], port[k], take_rows(addr, k), h[k])
        return out[group]

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
        self._release(np.flatnonzero(self.last_ms < now_ms - self.cfg.horizon_sec * 1000))

    def _file(self, slots: np.ndarray, times: np.ndarray, together: bool) -> np.ndarray:
        """Starts (ms) to their slots' intervals: per slot the newest MAX_STARTS_PER_TICK, in time
        order, one closer than the coalescing distance to the start before it (or older) left
        out. `together`: each slot's starts are side by side already. Returns the slots that got
        a start."""
        times = np.clip(times, INT32_MIN + 1, FREE - 1)
        first = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
        size = np.diff(np.r_[first, len(slots)])
        if len(slots) and (not together or size.max() > MAX_STARTS_PER_TICK):  # sort by slot, then time
            order = np.argsort((slots << 32) | (times - INT32_MIN))
            slots, times = slots[order], times[order]
            first = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
            size = np.diff(np.r_[first, len(slots)])
        if not len(slots):
            return slots
        width = min(int(size.max()), MAX_STARTS_PER_TICK)
        group = np.repeat(np.arange(len(first)), size)
        column = np.arange(len(slots)) - first[group] - size[group] + width  # the newest in the last column
        grid = np.full((len(first), width), NO_TIME, dtype=np.int64)
        grid[group[column >= 0], column[column >= 0]] = times[column >= 0]
        if width > 1:
            grid.sort(axis=1)  # in time order, NO_TIME first
        slots = slots[first]
        last = self.last_ms[slots].astype(np.int64)
        flags = self.flags[slots]
        started = (flags & COUNT) > 0
        coalesce_ms = self.cfg.min_period_sec * 1000 * COALESCE_FRACTION
        new = np.full(grid.shape, np.nan)
        took = np.zeros(len(slots), dtype=np.int64)
        for k in range(width):  # a column at a time: one start per pair
            t = grid[:, k]
            ok = t - last >= coalesce_ms  # else the same start (or an older one, out of order); NO_TIME never
            new[:, k] = np.where(ok & started, t - last, np.nan)
            started |= ok
            took += ok
            last = np.where(ok, t, last)
        filed = took > 0
        slots, new, took, flags = slots[filed], new[filed], took[filed], flags[filed]
        self.last_ms[slots] = last[filed]
        self.flags[slots] = (flags & ~np.uint8(COUNT)) | np.minimum((flags & COUNT) + took, KEEP).astype(np.uint8)
        count = np.count_nonzero(~np.isnan(new), axis=1)
        if width > 1:  # the intervals first, in order
            new = np.take_along_axis(new, np.argsort(np.isnan(new), axis=1, kind="stable"), axis=1)
        with np.errstate(over="ignore"):  # past float16 (7.5 days): inf, older than any horizon
            new = (new / INTERVAL_UNIT_MS).astype(np.float16)
        for c in range(1, width + 1):  # pairs with c new intervals: the c oldest make room
            these = np.flatnonzero(count == c)
            if len(these):
                s = slots[these]
                kept = take_rows(self.intervals, s)[:, c:]
                put_rows(self.intervals, s, np.concatenate([kept, new[these, :c]], axis=1))
        return slots

    def _score(self, dirty: np.ndarray, now_ms: int) -> List[Beacon]:
        cfg = self.cfg
        flags = self.flags[dirty]
        hot = np.zeros(len(dirty), dtype=bool)  # fewer intervals than min_connections - 1: not hot
        scored = np.flatnonzero((flags & COUNT).astype(np.int64) >= cfg.min_connections)
        r = None
        if len(scored):
            sec = take_rows(self.intervals, dirty[scored]).astype(np.float64) * (INTERVAL_UNIT_MS / 1000)
            # each interval's older start, back from the newest (exact) through the stored intervals,
            # less their rounding: a start older than the horizon never counts
            back_ms = np.cumsum(np.where(np.isnan(sec), 0, sec)[:, ::-1], axis=1)[:, ::-1] * 1000
            older = self.last_ms[dirty[scored], None] - back_ms / (1 - ROUNDING) - 1
            sec[older < now_ms - cfg.horizon_sec * 1000] = np.nan
            r = regularity(sec)
            eligible = (r.count >= cfg.min_connections - 1) & (r.period >= cfg.min_period_sec)
            hot[scored] = eligible & (r.score >= cfg.score_threshold)
        fire = hot & ((flags & HOT) > 0) & ((flags & ALERTED) == 0)  # hot twice in a row: CONSECUTIVE
        self.flags[dirty] = (flags & COUNT) | (flags & ALERTED) | np.where(hot, HOT, 0).astype(np.uint8) \
            | np.where(fire, ALERTED, 0).astype(np.uint8)
        found = []
        fired = np.flatnonzero(fire)
        for i in fired[np.argsort(dirty[fired])].tolist():  # in slot order
            slot, j = int(dirty[i]), int(np.searchsorted(scored, i))
            t = self.table
            destination = address_text(t.family_of(slot), t.address_bytes(np.array([slot]))[0].tobytes())
            found.append(Beacon(t.source_of(slot), destination, int(t.port[slot]), t.names.get(slot, ""),
                                float(r.period[j]), float(r.jitter[j]), float(r.skew[j]), int(r.count[j]) + 1,
                                float(r.score[j])))
        return found

    def memory_bytes(self) -> int:
        """All the tracker holds: the per-slot arrays at capacity, the pair table (keys, index,
        sources, names) and the beacons reported."""
        arrays = sum(a.nbytes for a in (self.last_ms, self.intervals, self.flags))
        reported = sys.getsizeof(self.reported) + sum(sys.getsizeof(k) + sys.getsizeof(k[1]) + sys.getsizeof(v)
                                                       for k, v in self.reported.items())
        return int(arrays + self.table.memory_bytes() + reported)
