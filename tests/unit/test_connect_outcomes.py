"""Final outcomes and latency in the connect engine (fake probe, fake clock): a handshake pending
at return is in_progress until its end arrives, the end completes its record, pending ones
that missed their end are given up as unknown, and Summary's latency percentiles."""
import pytest

from netwatchd.config import ConnectionsConfig
from netwatchd.connects.history import Counts
from netwatchd.connects.latency import LOG2_SLOTS, bucket_bounds, bucket_of, by_command, percentile
from netwatchd.connects.monitor import ConnectMonitor
from netwatchd.connects.records import PendingHandshake
from tests.unit.test_connect_monitor import Clock, FakeProbe
from tests.unit.test_connect_record import build_event

NOW = 10_000  # wall seconds of the fake clock; boot offset 0, so boot ns = wall ns

OUT = {"succeeded": 1, "refused": 2, "timed_out": 3, "other_failed": 4, "in_progress": 5, "unknown": 6}


def event(pid=100, kind=1, ret=-115, outcome="in_progress", syn_sec=NOW - 1.0, at_sec=NOW - 1.0, latency_usec=0,
          end_err=0, port=443):
    return build_event({"boot_ns": int(at_sec * 1e9), "tgid": pid, "tid": pid, "uid": 0, "ret": ret, "family": 2,
                        "port": port, "kind": kind, "transport": 1, "outcome": OUT[outcome], "comm": "curl",
                        "addr_hex": "0a000002", "syn_ns": int(syn_sec * 1e9), "latency_usec": latency_usec,
                        "end_err": end_err})


@pytest.fixture
def env():
    probe, clock = FakeProbe(), Clock(NOW)
    mon = ConnectMonitor(probe, ConnectionsConfig(), clock=clock, is_gone=lambda pid: pid != 100, boot_offset_ns=0)
    return probe, clock, mon


def test_a_pending_handshake_is_in_progress_then_its_end_completes_the_record(env):
    probe, clock, mon = env
    probe.raw = [event()]
    probe.handshakes[7] = PendingHandshake(7, 100, 0, "curl", int((NOW - 1) * 1e9))
    mon.refresh()
    a = mon.summary(100, "", 60)
    assert (a["total_attempts"], a["in_progress"], a["succeeded"]) == (1, 1, 0)
    assert mon.list_connections(100, 0)[0][0]["outcome"] == "in_progress"

    # the handshake ends 20 ms later: the kernel counted it and wrote the end
    del probe.handshakes[7]
    probe.counters[(100, 0)] = ("curl", Counts(succeeded=1))
    probe.raw = [event(kind=3, outcome="succeeded", at_sec=NOW - 0.98, latency_usec=20_000)]
    mon.refresh()
    a = mon.summary(100, "", 60)
    assert (a["total_attempts"], a["in_progress"], a["succeeded"], a["latency_samples"]) == (1, 0, 1, 1)
    assert 19_456 <= a["latency_p50_usec"] <= 20_480
    [record], truncated = mon.list_connections(100, 0)
    assert (record["outcome"], record["latency_usec"], record["return_code"], truncated) == ("succeeded", 20_000, -115,
                                                                                              False)


def test_an_end_that_arrives_before_its_connect_still_completes_it(env):
    probe, _, mon = env
    probe.raw = [event(kind=3, outcome="refused", end_err=111, latency_usec=300), event()]
    mon.refresh()
    [record], _ = mon.list_connections(0, 0)
    assert (record["outcome"], record["end_error"], record["latency_usec"]) == ("refused", "ECONNREFUSED", 300)


def test_an_end_that_arrives_before_its_connect_is_one_latency_sample(env):
    """Seen in a loaded run (+3 samples over 28100 handshakes): the end's record, written on
    another CPU, came before its connect's; completing the connect record counted it again."""
    probe, _, mon = env
    probe.raw = [event(kind=3, outcome="succeeded", latency_usec=300), event()]
    probe.counters[(100, 0)] = ("curl", Counts(succeeded=1))
    mon.refresh()
    a = mon.summary(100, "", 60)
    assert (a["succeeded"], a["latency_samples"]) == (1, 1), a


def test_pending_outside_the_window_is_not_in_it(env):
    probe, _, mon = env
    probe.handshakes[7] = PendingHandshake(7, 100, 0, "curl", int((NOW - 90) * 1e9))
    mon.refresh()
    assert mon.summary(0, "curl", 60)["in_progress"] == 0
    assert mon.summary(0, "curl", 120)["in_progress"] == 1


def test_a_handshake_that_missed_its_end_is_given_up_as_unknown(env):
    probe, _, mon = env
    probe.handshakes[7] = PendingHandshake(7, 100, 0, "curl", int((NOW - 601) * 1e9))
    probe.handshakes[8] = PendingHandshake(8, 100, 0, "curl", int((NOW - 599) * 1e9))
    mon.refresh()
    assert list(probe.handshakes) == [8]
    a = mon.summary(100, "", 3600)
    assert (a["unknown"], a["in_progress"], a["total_attempts"]) == (1, 1, 2)
    assert mon.handshakes_untracked() == 1
    assert mon.command_totals["curl"].unknown == 1  # in the metrics' totals too


def test_a_gone_process_with_a_pending_handshake_keeps_its_counters(env):
    probe, clock, mon = env
    probe.counters[(300, 0)] = ("curl", Counts(succeeded=1))
    probe.handshakes[7] = PendingHandshake(7, 300, 0, "curl", int((NOW - 1) * 1e9))
    mon.refresh()
    clock.t += 1
    mon.refresh()  # idle and gone, but its handshake will still end in its counters
    assert probe.deleted == []
    del probe.handshakes[7]
    clock.t += 1
    mon.refresh()
    clock.t += 1
    mon.refresh()
    assert probe.deleted == [300]


def test_a_handshake_that_ends_between_the_kernel_reads_is_not_freed_unread(env):
    """The counters and the handshake map are read one after the other, not at once. A gone
    process's last pending handshake may end (the kernel takes it out of the map and counts
    it) just after its counters were read: that count must still be read, not freed with it."""
    probe, clock, mon = env
    probe.counters[(300, 0)] = ("curl", Counts(succeeded=1))
    probe.handshakes[7] = PendingHandshake(7, 300, 0, "curl", int((NOW - 1) * 1e9))
    mon.refresh()
    clock.t += 1
    mon.refresh()  # idle and gone, its handshake pending: kept
    read_counters = probe.read_counters

    def read_then_the_handshake_ends():
        snapshot = read_counters()
        del probe.handshakes[7]
        probe.counters[(300, 0)] = ("curl", Counts(succeeded=1, other_failed=1))
        return snapshot

    probe.read_counters = read_then_the_handshake_ends
    clock.t += 1
    mon.refresh()
    probe.read_counters = read_counters
    for _ in range(2):
        clock.t += 1
        mon.refresh()
    a = mon.summary(300, "", 60)
    assert (a["succeeded"], a["other_failed"], a["in_progress"], a["total_attempts"]) == (1, 1, 0, 2)
    assert probe.deleted == [300]

def test_latency_buckets_and_percentiles():
    for usec in (0, 1, 15, 16, 31, 32, 1000, 20_000, 123_456_789):
        low, high = bucket_bounds(bucket_of(usec))
        assert low <= usec < high and (high - low) <= max(1, low / 16)
    buckets = {}
    for usec in range(1, 101):  # 1..100 us, one each
        buckets[bucket_of(usec)] = buckets.get(bucket_of(usec), 0) + 1
    assert percentile(buckets, 0.5) in range(48, 53) and percentile(buckets, 0.99) in range(96, 101)
    assert percentile({}, 0.5) == 0


def test_kernel_cells_fold_into_one_histogram_per_command():
    cells = {("curl", 2, b"\x0a\0\0\x02" + b"\0" * 12, 443): {15: (3, 60_000), 16: (1, 40_000)},
             ("curl", 2, b"\x0a\0\0\x03" + b"\0" * 12, 80): {15: (2, 40_000)},
             ("ssh", 10, b"\0" * 16, 22): {1: (1, 1)}}
    hists = by_command(cells)
    assert hists["curl"].count == 6 and hists["curl"].sum_usec == 140_000
    assert hists["curl"].slots[15] == 5 and len(hists["curl"].slots) == LOG2_SLOTS
    le = dict(hists["curl"].cumulative())
    assert le[(1 << 15) / 1e6] == 5 and le[(1 << 16) / 1e6] == 6 and le[(1 << 14) / 1e6] == 0
