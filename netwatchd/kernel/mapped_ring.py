"""A BPF ring buffer read through its own mapping: every committed record at once, as numpy rows.

The kernel lets user space map a ring buffer (as libbpf's ring_buffer__poll does): the consumer
position on a writable page, then the producer position, then the data area mapped twice in a
row, so a record that wraps past the end reads as one contiguous run. Each record is an 8-byte
header (its length, with a BUSY bit while the program still writes it and a DISCARD bit if it
gave it up) and the record, padded to 8 bytes.

Our connect records all have one size, so the records between the consumer and the producer
positions are a plain array of (header, record) rows: one numpy.frombuffer decodes all of them,
with no Python call per record (bcc's callback path costs one ctypes callback and one bytes
copy per record). Reading stops at the first record still BUSY, as libbpf's does; a record of
another size (none is ever written) ends the batch, is counted in `malformed` and skipped by its
header, like a discarded one.
"""
from __future__ import annotations

import mmap
import os
from typing import Optional

import numpy as np

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
HEADER_SIZE = 8  # struct bpf_ringbuf_hdr: u32 len (with the two flags), u32 page offset
BUSY = 1 << 31
DISCARD = 1 << 30
LENGTH_MASK = DISCARD - 1


def padded(size: int) -> int:
    return (size + HEADER_SIZE + 7) & ~7


class MappedRing:
    """Reads one ring buffer map (fd, data size in bytes) whose records are `record_dtype` rows."""

    def __init__(self, map_fd: int, data_size: int, record_dtype: np.dtype):
        if data_size <= 0 or data_size & (data_size - 1) or data_size % PAGE_SIZE:
            raise ValueError(f"ring buffer of {data_size} bytes: not a power-of-two number of pages")
        self.size = data_size
        self.mask = data_size - 1
        self.record_size = record_dtype.itemsize
        self.stride = padded(self.record_size)
        self.row = np.dtype([("header_len", "<u4"), ("header_page", "<u4"), ("record", record_dtype),
                             ("pad", "V", self.stride - HEADER_SIZE - self.record_size)])
        self._consumer = mmap.mmap(map_fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, PAGE_SIZE + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=PAGE_SIZE)
        self._consumer_pos = np.frombuffer(self._consumer, dtype="<u8", count=1)
        self._producer_pos = np.frombuffer(self._producer, dtype="<u8", count=1)
        self._data = np.frombuffer(self._producer, dtype=np.uint8, offset=PAGE_SIZE)
        self.malformed = 0

    def take(self) -> np.ndarray:
        """Every record committed since the last take, oldest first (a copy: the kernel reuses
        the space as soon as the consumer position moves past it)."""
        out = []
        consumer = int(self._consumer_pos[0])
        producer = int(self._producer_pos[0])  # an aligned 8-byte load: the kernel's release store
        while consumer < producer:
            count = (producer - consumer) // self.stride
            rows = np.frombuffer(self._data, dtype=self.row, count=count, offset=consumer & self.mask)
            odd = np.flatnonzero(rows["header_len"] != self.record_size)  # BUSY, DISCARD, another size
            n = int(odd[0]) if len(odd) else count
            if n:
                out.append(rows["record"][:n].copy())
                consumer += n * self.stride
            after = self._past_odd(consumer, producer) if consumer < producer else None
            if after is None:
                break
            consumer = after
        self._consumer_pos[0] = consumer  # hands the space back to the kernel
        if not out:
            return np.zeros(0, dtype=self.row["record"])
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _past_odd(self, consumer: int, producer: int) -> Optional[int]:
        """At a record that is not a plain committed one: None if it is still being written (or
        nothing is there); else where the next record starts (a discarded one, or a malformed
        size, stepped over)."""
        if producer - consumer < HEADER_SIZE:
            return None
        start = consumer & self.mask
        length = int(np.frombuffer(self._data, dtype="<u4", count=1, offset=start)[0])
        if length & BUSY:
            return None
        if not length & DISCARD:
            self.malformed += 1
        return consumer + (((length & LENGTH_MASK) + HEADER_SIZE + 7) & ~7)

    def close(self) -> None:
        for name in ("_consumer_pos", "_producer_pos", "_data"):
            setattr(self, name, None)
        self._consumer.close()
        self._producer.close()
