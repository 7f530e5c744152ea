"""The record path without a Python call per record (issue 24): the mapped ring read as one array,
a drain split and grouped with numpy, and the recent ring of raw rows -- each against the
per-record reading it replaced."""
import logging
import mmap
import os
import socket
import struct

import numpy as np
import pytest

from netwatchd.connects.batches import TickStarts, latency_groups, split_batch
from netwatchd.connects.latency import LatencyHistory, bucket_of, buckets_of
from netwatchd.connects.recent import RecentConnections
from netwatchd.connects.records import EVENT_DTYPE, EVENT_SIZE, RecordBatch, decode_event
from netwatchd.kernel.mapped_ring import BUSY, DISCARD, PAGE_SIZE, MappedRing
from netwatchd.record_decoding import MalformedRecords
from tests.unit.test_connect_record import build_event

def dropped():
    return MalformedRecords("connect records", logging.getLogger("test"))


def raw(pid=100, kind=1, outcome=2, at_ns=1_000, addr="0a000001", port=80, comm="curl", family=2, syn_ns=0,
        latency_usec=0, ret=-111, **extra):
    return build_event(dict({"boot_ns": at_ns, "tgid": pid, "tid": pid, "uid": 0, "ret": ret, "family": family,
                             "port": port, "kind": kind, "transport": 1, "outcome": outcome, "comm": comm,
                             "addr_hex": addr, "syn_ns": syn_ns, "latency_usec": latency_usec}, **extra))


def rows_of(*records: bytes) -> np.ndarray:
    return np.frombuffer(b"".join(records), EVENT_DTYPE).copy()


# -- the mapped ring -------------------------------------------------------------------------------

class FakeRingFile:
    """A file laid out as the kernel maps a ring buffer: the consumer page, the producer page, then
    the data area twice (the kernel maps the same pages twice; here the bytes are written twice)."""

    def __init__(self, size: int):
        self.size = size
        self.fd = os.memfd_create("ring")
        os.ftruncate(self.fd, 2 * PAGE_SIZE + 2 * size)
        self.map = mmap.mmap(self.fd, 2 * PAGE_SIZE + 2 * size)
        self.producer = 0

    def put(self, payload: bytes, flags: int = 0) -> None:
        record = struct.pack("<II", len(payload) | flags, 0) + payload
        record += b"\0" * (-len(record) % 8)
        for i, byte in enumerate(record):
            at = (self.producer + i) % self.size
            for copy in (0, self.size):
                self.map[2 * PAGE_SIZE + copy + at] = byte
        self.producer += len(record)
        self.map[PAGE_SIZE:PAGE_SIZE + 8] = struct.pack("<Q", self.producer)

    def set_flags(self, position: int, flags: int) -> None:
        """Change the header flags of the record that starts at `position` (as the kernel commits)."""
        at = 2 * PAGE_SIZE + position % self.size
        length = struct.unpack_from("<I", self.map, at)[0] & ~(BUSY | DISCARD)
        for copy in (0, self.size):
            struct.pack_into("<I", self.map, at + copy, length | flags)

    @property
    def consumer(self) -> int:
        return struct.unpack_from("<Q", self.map, 0)[0]


@pytest.fixture
def ring():
    f = FakeRingFile(PAGE_SIZE)
    r = MappedRing(f.fd, PAGE_SIZE, EVENT_DTYPE)
    yield f, r
    r.close()
    f.map.close()
    os.close(f.fd)


def test_the_mapped_ring_reads_every_committed_record_at_once_and_hands_the_space_back(ring):
    f, r = ring
    records = [raw(at_ns=i, port=i) for i in range(10)]
    for rec in records:
        f.put(rec)
    got = r.take()
    assert got["port"].tolist() == list(range(10)) and got.tobytes() == b"".join(records)
    assert f.consumer == f.producer == 10 * (EVENT_SIZE + 8)
    assert len(r.take()) == 0


def test_a_record_that_wraps_past_the_end_reads_whole(ring):
    f, r = ring
    per = EVENT_SIZE + 8
    for i in range(PAGE_SIZE // per):  # fill to just before the end, and consume
        f.put(raw(port=i))
    assert len(r.take()) == PAGE_SIZE // per
    f.put(raw(port=7777))  # straddles the end of the data area
    f.put(raw(port=8888))
    assert r.take()["port"].tolist() == [7777, 8888]


def test_reading_stops_at_a_record_still_being_written_and_steps_over_a_discarded_one(ring):
    f, r = ring
    f.put(raw(port=1))
    busy_at = f.producer
    f.put(raw(port=2), flags=BUSY)
    f.put(raw(port=3))
    assert r.take()["port"].tolist() == [1]  # the rest waits for the busy one
    f.set_flags(busy_at, DISCARD)  # the program gave it up
    assert r.take()["port"].tolist() == [3]
    f.put(b"\0" * 24)  # a size no program writes: counted, skipped
    f.put(raw(port=4))
    assert r.take()["port"].tolist() == [4] and r.malformed == 1


# -- a drain, split ---------------------------------------------------------------------------------

def test_a_drain_is_split_in_time_order_with_the_reserve_and_the_long_records():
    main = rows_of(raw(at_ns=10, port=1), raw(at_ns=30, port=3), raw(kind=3, outcome=1, at_ns=35, port=9,
                                                                     syn_ns=5, latency_usec=30, ret=-115))
    reserve = rows_of(raw(at_ns=20, port=2))
    unix = raw(at_ns=25, family=1, addr="", port=0, path="/run/x.sock", path_len=11)
    bad = dropped()
    split = split_batch(RecordBatch(main, reserve, [unix, b"short"]), bad)
    assert split.calls["port"].tolist() == [1, 2, 0, 3] and bad.count == 1
    assert decode_event(split.calls[2].tobytes() + split.paths[2], 0).destination == "/run/x.sock"
    assert split.ends["port"].tolist() == [9] and split.latencies["port"].tolist() == [9]
    assert split.starts["port"].tolist() == [1, 2, 3]  # connects to an IP destination


def test_a_record_with_an_unknown_outcome_is_counted_and_dropped():
    bad = dropped()
    bad.count = 4
    split = split_batch(RecordBatch(rows_of(raw(port=1), raw(port=2, outcome=99))), bad)
    assert split.calls["port"].tolist() == [1] and bad.count == 5


def test_latencies_are_filed_by_group_as_one_by_one():
    usecs = [0, 3, 15, 16, 17, 100, 1000, 123456, 2**33 + 5]
    rows = rows_of(*[raw(pid=100 + i % 2, outcome=1, at_ns=(10 + i // 5) * 10**9, syn_ns=1, latency_usec=u % 2**32)
                     for i, u in enumerate(usecs)])
    grouped, single = LatencyHistory(3600), LatencyHistory(3600)
    for second, key, bucket, n in latency_groups(rows, 0):
        grouped.add_count(second, key, bucket, n)
    for row in rows:
        single.add(int(row["boot_ns"]) // 10**9, (int(row["tgid"]), "curl"), int(row["latency_usec"]))
    keys = single.keys(command="curl")
    assert sorted(grouped.keys(command="curl")) == sorted(keys)
    assert grouped.window(20, 60, keys) == single.window(20, 60, keys)
    assert buckets_of(np.array(usecs)).tolist() == [bucket_of(u) for u in usecs]


def test_a_ticks_starts_keep_each_flows_newest_times_as_columns():
    starts = TickStarts(per_flow=2)
    ip6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1").hex()
    starts.add(rows_of(*[raw(at_ns=t * 1000, port=443) for t in (5, 1, 9, 7)],  # one flow, out of order
                       raw(at_ns=2000, port=53, comm="dig"), raw(at_ns=3000, family=10, addr=ip6, port=443),
                       raw(at_ns=4000, comm="a\x1bb")), 0)
    c = starts.take()
    got = sorted((c.sources[s], c.address_text(i), int(p), int(t)) for i, (s, p, t) in
                 enumerate(zip(c.source, c.port, c.time_usec)))
    assert got == [("command:a\\x1bb", "10.0.0.1", 80, 4), ("command:curl", "10.0.0.1", 443, 7),
                   ("command:curl", "10.0.0.1", 443, 9), ("command:curl", "2001:db8::1", 443, 3),
                   ("command:dig", "10.0.0.1", 53, 2)]
    assert len(starts.take()) == 0


# -- the recent ring ---------------------------------------------------------------------------------

def recent(capacity):
    return RecentConnections(capacity, lambda b: decode_event(b, 0))


def test_the_recent_ring_keeps_the_newest_across_wraps_and_resizes():
    r = recent(5)
    for batch in ([1, 2, 3], [4, 5, 6, 7], [8], [9, 10, 11, 12, 13, 14, 15]):
        r.add(rows_of(*[raw(port=p, pid=100 + p % 2) for p in batch]))
    assert [x.port for x in r.newest(0, 10)[0]] == [15, 14, 13, 12, 11] and len(r) == 5
    assert r.newest(101, 2) == (r.newest(101, 2)[0], True) and [x.port for x in r.newest(101, 2)[0]] == [15, 13]
    r.resize(3)
    assert [x.port for x in r.newest(0, 10)[0]] == [15, 14, 13]
    r.resize(6)
    r.add(rows_of(raw(port=16)))
    assert [x.port for x in r.newest(0, 10)[0]] == [16, 15, 14, 13]


def test_a_handshake_end_completes_its_connect_in_the_ring_early_or_late():
    r = recent(10)
    pending = raw(outcome=5, ret=-115, syn_ns=77, port=1)
    end = raw(kind=3, outcome=1, ret=-115, syn_ns=77, latency_usec=40, port=1)
    r.add(rows_of(pending))
    assert r.newest(0, 1)[0][0].outcome == "in_progress"
    r.end_handshakes(rows_of(end))
    assert (r.newest(0, 1)[0][0].outcome, r.newest(0, 1)[0][0].latency_usec) == ("succeeded", 40)
    # the end before its connect's record (two CPUs): it waits
    r.end_handshakes(rows_of(raw(kind=3, outcome=2, ret=-115, syn_ns=88, latency_usec=5, end_err=111, port=2)))
    r.add(rows_of(raw(outcome=5, ret=-115, syn_ns=88, port=2)))
    first = r.newest(0, 1)[0][0]
    assert (first.outcome, first.end_error_name) == ("refused", "ECONNREFUSED")


def test_each_drain_hands_over_the_rings_new_malformed_records_once_and_a_new_generation():
    """ConnectProbe.drain without a kernel: the rings' malformed counts are cumulative, a batch
    carries only the new ones; every drain writes the next generation for the overflow rule."""
    from netwatchd.connects.records import EVENT_DTYPE as ROW
    from netwatchd.kernel.connect_probe import ConnectProbe

    class Ring:
        malformed = 0

        def take(self):
            return np.zeros(0, ROW)

    class Long:
        def drain(self):
            return []

    class Gen(dict):
        def __setitem__(self, key, value):
            super().__setitem__(key.value, value.value)

    probe = ConnectProbe.__new__(ConnectProbe)
    probe._rings, probe._long, probe._drain_gen, probe._malformed = [Ring(), Ring()], Long(), 0, 0
    gen = Gen()
    probe._bpf = {b"drain_gen": gen}
    probe._rings[1].malformed = 2
    assert probe.drain().malformed == 2 and gen[0] == 1
    assert probe.drain().malformed == 0 and gen[0] == 2
    probe._rings[0].malformed = 1
    assert probe.drain().malformed == 1 and gen[0] == 3
