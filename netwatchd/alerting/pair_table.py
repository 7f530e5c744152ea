"""The beacon tracker's pair identities (pure): (source, destination, port) as columns with an
integer slot, and a sorted hash index to find a whole tick's pairs at once.

Per slot (arrays of the table's capacity): `meta` uint32, the source's id (index into the small
`sources` table, one string per distinct source) shifted left once, with IPv6 in bit 0; `port`
uint16; `addr` the 16 address bytes as two uint64 words. 22 bytes a slot. A name (DNS/TLS, device
pairs only) is kept in `names` {slot: name} for the pairs that have one.

The index: the top 32 bits of the tracked pairs' 64-bit key hashes, sorted (`_hash`), beside
their slots (`_order`): 8 bytes a pair. A tick's starts are sorted by their 64-bit hash once
(np.argsort): that puts each pair's starts side by side and makes the lookup one np.searchsorted
of sorted hashes, then an exact comparison of the key columns. Two pairs sharing the index's 32
bits (about n^2 / 2^33 of them among n pairs: one or two at 100k) are told apart by that
comparison, on a slower path taken only for them; two sharing all 64 bits, by a sort on the key
columns themselves (group()). The hash is keyed with Python's own per-process hash secret
(PYTHONHASHSEED), so nobody can choose destinations that collide on purpose (each collision
costs a slower path, never a wrong pair).
"""
from __future__ import annotations

import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np

from netwatchd.column_hash import hash_columns

_U64 = np.uint64
_SEED = hash(("netwatchd", "beacon pairs")) & ((1 << 64) - 1)


def take_rows(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """a[rows] of a 2-D array, without fancy indexing's cost per element (np.take of rows)."""
    return np.take(a, rows, axis=0)


def put_rows(a: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """a[rows] = values for a contiguous 2-D array, each row moved as one item (np.put of a
    void view: fancy assignment copies element by element, several times slower); one row of
    `values` is put in every place."""
    row = np.dtype((np.void, a.shape[1] * a.itemsize))
    np.put(a.view(row)[:, 0], rows, np.ascontiguousarray(values, a.dtype).view(row).reshape(-1))


def _same_as_before(meta: np.ndarray, port: np.ndarray, addr: np.ndarray) -> np.ndarray:
    """Per key but the first: the same key as the one before it."""
    return ((meta[1:] == meta[:-1]) & (port[1:] == port[:-1]) & (addr[1:, 0] == addr[:-1, 0])
            & (addr[1:, 1] == addr[:-1, 1]))


class PairTable:
    def __init__(self, seed: int = _SEED):
        self._seed = _U64(seed & ((1 << 64) - 1))
        self.sources: List[str] = []
        self._source_ids: Dict[str, int] = {}
        self.meta = np.zeros(0, np.uint32)
        self.port = np.zeros(0, np.uint16)
        self.addr = np.zeros((0, 2), _U64)
        self.names: Dict[int, str] = {}
        self._hash = np.zeros(0, np.uint32)
        self._order = np.zeros(0, np.int32)

    def __len__(self) -> int:
        return len(self._hash)

    def grow(self, capacity: int) -> None:
        pad = capacity - len(self.meta)
        if pad > 0:
            self.meta = np.concatenate([self.meta, np.zeros(pad, np.uint32)])
            self.port = np.concatenate([self.port, np.zeros(pad, np.uint16)])
            self.addr = np.concatenate([self.addr, np.zeros((pad, 2), _U64)])

    # -- keys -----------------------------------------------------------------------------------
    def intern(self, sources: Sequence[str]) -> np.ndarray:
        """The ids of `sources` (new ones added): int64 per source."""
        ids = self._source_ids
        out = np.empty(len(sources), np.int64)
        for i, s in enumerate(sources):
            sid = ids.get(s)
            if sid is None:
                s = sys.intern(str(s))
                sid = ids[s] = len(self.sources)
                self.sources.append(s)
            out[i] = sid
        return out

    def hash(self, meta: np.ndarray, port: np.ndarray, addr: np.ndarray) -> np.ndarray:
        """64 bits of hash per key: a tick's keys sorted by it lie together, pair by pair (two
        pairs sharing all 64 are left to group()'s slower path); the index keeps the top 32."""
        return hash_columns([addr[:, 0], addr[:, 1], (meta.astype(_U64) << _U64(16)) | port.astype(_U64)],
                            int(self._seed))

    @staticmethod
    def indexed(h: np.ndarray) -> np.ndarray:
        """What the index keeps of a 64-bit hash: its top 32 bits (sorting by the 64 sorts by them)."""
        return (h >> _U64(32)).astype(np.uint32)

    def _same(self, slots: np.ndarray, meta: np.ndarray, port: np.ndarray, addr: np.ndarray) -> np.ndarray:
        held = take_rows(self.addr, slots)
        return ((self.meta[slots] == meta) & (self.port[slots] == port) & (held[:, 0] == addr[:, 0])
                & (held[:, 1] == addr[:, 1]))

    def find(self, meta: np.ndarray, port: np.ndarray, addr: np.ndarray, h: np.ndarray) -> np.ndarray:
        """The slot of each key (int64), -1 for a key not in the table; `h` their hash(), fastest
        in sorted order."""
        out = np.full(len(h), -1, np.int64)
        h = self.indexed(h)
        n = len(self._hash)
        if not n or not len(h):
            return out
        at = np.searchsorted(self._hash, h)
        inside = at < n
        hit = np.flatnonzero(inside & (self._hash[np.minimum(at, n - 1)] == h))
        if not len(hit):
            return out
        slots = self._order[at[hit]].astype(np.int64)
        same = self._same(slots, meta[hit], port[hit], take_rows(addr, hit))
        out[hit[same]] = slots[same]
        after = at[hit] + 1
        more = hit[~same & (after < n)]  # a hash shared with another key: look at the rest of the run
        if len(more):
            more = more[self._hash[at[more] + 1] == h[more]]
        for i in more.tolist():  # rare: a collision of 32-bit hashes
            j = int(at[i]) + 1
            while j < n and self._hash[j] == h[i]:
                s = int(self._order[j])
                if self._same(np.array([s]), meta[i:i + 1], port[i:i + 1], addr[i:i + 1])[0]:
                    out[i] = s
                    break
                j += 1
        return out

    @staticmethod
    def group(meta: np.ndarray, port: np.ndarray, addr: np.ndarray, h: np.ndarray,
              rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Keys sorted by their hash `h`, from `rows` of a tick: which are the same pair. Returns
        the group of each key and one key (index) of each group, the groups numbered in the
        order of their first rows."""
        order = np.arange(len(h))
        same = _same_as_before(meta, port, addr)
        if np.any((h[1:] == h[:-1]) & ~same):  # two pairs share a hash: put each one's keys together
            order = np.lexsort((addr[:, 1], addr[:, 0], port, meta, h))
            same = _same_as_before(meta[order], port[order], take_rows(addr, order))
        bounds = np.flatnonzero(np.r_[True, ~same])
        by_first = np.argsort(np.minimum.reduceat(rows[order], bounds))
        rank = np.empty(len(bounds), np.int64)
        rank[by_first] = np.arange(len(bounds))
        group = np.empty(len(h), np.int64)
        group[order] = rank[np.cumsum(np.r_[True, ~same]) - 1]
        return group, order[bounds][by_first]

    # -- the index ------------------------------------------------------------------------------
    def insert(self, slots: np.ndarray, meta: np.ndarray, port: np.ndarray, addr: np.ndarray, h: np.ndarray) -> None:
        """New pairs (keys not in the table) at free `slots`."""
        self.meta[slots], self.port[slots] = meta, port
        put_rows(self.addr, slots, addr)
        order = np.argsort(h)
        hs = self.indexed(h[order])
        at = np.searchsorted(self._hash, hs)
        self._hash = np.insert(self._hash, at, hs)
        self._order = np.insert(self._order, at, slots[order].astype(np.int32))

    def remove(self, slots: np.ndarray) -> None:
        if not len(slots):
            return
        gone = np.zeros(len(self.meta), dtype=bool)
        gone[slots] = True
        keep = ~gone[self._order]
        self._hash, self._order = self._hash[keep], self._order[keep]
        if self.names:
            for s in [s for s in self.names if gone[s]]:
                del self.names[s]

    def compact_sources(self, used: np.ndarray) -> None:
        """Forget the sources no tracked pair has (a host that names many commands in turn would
        grow the table for ever); the ids change, so the index is rebuilt."""
        sid = (self.meta[used] >> 1).astype(np.int64)
        kept, new_id = np.unique(sid, return_inverse=True)
        self.sources = [self.sources[i] for i in kept.tolist()]
        self._source_ids = {s: i for i, s in enumerate(self.sources)}
        self.meta[used] = (new_id.astype(np.uint32) << np.uint32(1)) | (self.meta[used] & np.uint32(1))
        h = self.indexed(self.hash(self.meta[used], self.port[used], take_rows(self.addr, used)))
        order = np.argsort(h)
        self._hash, self._order = h[order], used[order].astype(np.int32)

    # -- what a slot is -------------------------------------------------------------------------
    def source_of(self, slot: int) -> str:
        return self.sources[int(self.meta[slot]) >> 1]

    def family_of(self, slot: int) -> int:
        return 6 if int(self.meta[slot]) & 1 else 4

    def address_bytes(self, slots: np.ndarray) -> np.ndarray:
        """(n, 16) uint8, network byte order."""
        return take_rows(self.addr, slots).view(np.uint8).reshape(-1, 16)

    def memory_bytes(self) -> int:
        """Everything the table holds: its columns at capacity, the index, the sources and names."""
        arrays = sum(a.nbytes for a in (self.meta, self.port, self.addr, self._hash, self._order))
        strings = sum(sys.getsizeof(s) for s in self.sources) + sum(sys.getsizeof(n) for n in self.names.values())
        containers = sys.getsizeof(self.sources) + sys.getsizeof(self._source_ids) + sys.getsizeof(self.names)
        slot_keys = sum(sys.getsizeof(s) for s in self.names)
        return int(arrays + strings + containers + slot_keys)
