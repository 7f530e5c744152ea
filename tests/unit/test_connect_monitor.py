"""The connect engine with a fake probe and a fake clock: exactness, garbage collection,
losses, live reconfiguration."""
import dataclasses

import numpy as np
import pytest

from netwatchd.config import ConnectionsConfig
from netwatchd.connects.history import Counts
from netwatchd.connects.monitor import ConnectMonitor
from netwatchd.connects.queries import InvalidQuery
from netwatchd.connects.records import EVENT_DTYPE, EVENT_SIZE, ConnectLosses, PendingHandshake, RecordBatch
from tests.unit.test_connect_record import CASES, build_event


class FakeProbe:
    def __init__(self):
        self.counters = {}
        self.raw = []
        self.deleted = []
        self.ring_full = 0
        self.udp_sends = None
        self.handshakes = {}  # sk -> PendingHandshake
        self.handshakes_full = 0
        self.cells = {}

    def drain(self):
        """The raw records as a drain hands them over: the inet-sized ones as rows, any other
        size with the long ones."""
        raw, self.raw = self.raw, []
        inet = [r for r in raw if len(r) == EVENT_SIZE]
        rows = np.frombuffer(b"".join(inet), EVENT_DTYPE) if inet else np.zeros(0, EVENT_DTYPE)
        return RecordBatch(rows, long=[r for r in raw if len(r) != EVENT_SIZE])

    def read_counters(self):
        return dict(self.counters)

    def delete_processes(self, pids):
        self.deleted.extend(sorted(pids))
        for k in [k for k in self.counters if k[0] in pids]:
            del self.counters[k]

    def losses(self):
        return ConnectLosses(self.ring_full, 0, self.handshakes_full, 0, 0)

    def pending_handshakes(self):
        return list(self.handshakes.values())

    def abandon_handshake(self, sk):
        return self.handshakes.pop(sk, None) is not None

    def latency_cells(self):
        return dict(self.cells)

    def set_udp_sends(self, enabled):
        self.udp_sends = enabled


class Clock:
    def __init__(self, t=10_000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def env():
    probe, clock, alive = FakeProbe(), Clock(), {100, 200}
    mon = ConnectMonitor(probe, ConnectionsConfig(), clock=clock, is_gone=lambda pid: pid not in alive)
    return probe, clock, alive, mon


def test_refresh_reads_the_kernel_at_query_time(env):
    probe, clock, _, mon = env
    probe.counters[(100, 0)] = ("curl", Counts(4, 2, 0, 0, 1, 3))
    # no tick happened yet: the edge's refresh() reads the counters, so Summary is exact up to now
    mon.refresh()
    a = mon.summary(0, "curl", 60)
    assert (a["total_attempts"], a["succeeded"], a["failed"], a["unknown"], a["udp_sends"]) == (7, 4, 2, 1, 3)
    clock.t += 61
    probe.counters[(100, 0)] = ("curl", Counts(5, 2, 0, 0, 1, 3))
    mon.refresh()
    assert mon.summary(100, "", 60)["total_attempts"] == 1


def test_queries_never_read_the_kernel_or_change_state(env):
    probe, clock, _, mon = env
    probe.counters[(100, 0)] = ("curl", Counts(4, 2, 0, 0, 1, 3))
    probe.raw.append(b"garbage")
    assert mon.summary(0, "curl", 60)["total_attempts"] == 0  # nothing read: nothing known yet
    assert mon.list_connections(0, 0) == ([], False)
    assert probe.raw == [b"garbage"] and mon.malformed_records == 0  # the ring was not drained
    mon.refresh()
    assert mon.summary(0, "curl", 60)["total_attempts"] == 7
    assert mon.malformed_records == 1 and probe.raw == []


def test_dead_idle_processes_are_freed_after_their_last_read(env):
    probe, clock, alive, mon = env
    probe.counters[(200, 0)] = ("nc", Counts(1, 0, 0, 0, 0, 0))
    mon.tick()
    alive.discard(200)
    probe.counters[(200, 0)] = ("nc", Counts(3, 0, 0, 0, 0, 0))  # counted after the last tick, then exited
    clock.t += 1
    mon.tick()  # changed since the last read: read it, keep it
    assert probe.deleted == []
    clock.t += 1
    mon.tick()  # idle and gone: freed
    assert probe.deleted == [200]
    assert mon.summary(0, "nc", 60)["total_attempts"] == 3


def test_exec_keeps_each_command_its_own_counts(env):
    probe, clock, _, mon = env
    probe.counters[(100, 0)] = ("bash", Counts(2, 0, 0, 0, 0, 0))
    mon.tick()
    # bash execs curl: the kernel retires generation 0 under "bash", generation 1 counts for curl
    probe.counters[(100, 0)] = ("bash", Counts(3, 0, 0, 0, 0, 0))
    probe.counters[(100, 1)] = ("curl", Counts(4, 1, 0, 0, 0, 0))
    clock.t += 1
    mon.refresh()
    assert mon.summary(0, "bash", 60)["total_attempts"] == 3
    assert mon.summary(0, "curl", 60)["total_attempts"] == 5
    s = mon.summary(100, "", 60)
    assert s["total_attempts"] == 8 and s["commands"] == ["bash", "curl"]


def test_a_pid_is_freed_only_when_all_its_generations_are_idle(env):
    probe, clock, alive, mon = env
    probe.counters[(200, 0)] = ("sh", Counts(1, 0, 0, 0, 0, 0))
    mon.tick()
    alive.discard(200)
    probe.counters[(200, 1)] = ("nc", Counts(1, 0, 0, 0, 0, 0))  # new generation still moving
    clock.t += 1
    mon.tick()
    assert probe.deleted == []
    clock.t += 1
    mon.tick()
    assert probe.deleted == [200] and probe.counters == {}
    assert mon.summary(200, "", 60)["total_attempts"] == 2


def test_records_and_losses(env):
    probe, _, _, mon = env
    probe.raw = [build_event(c["event"]) for c in CASES[:3]] + [b"short"]
    probe.ring_full = 5
    mon.refresh()
    records, truncated = mon.list_connections(0, 2)
    assert [r["command"] for r in records] == ["python3", "nc"] and truncated
    records, truncated = mon.list_connections(7, 0)
    assert [r["return_code"] for r in records] == [-115, -111] and not truncated
    assert mon.events_lost() == 6  # 5 found the ring full + 1 malformed
    with pytest.raises(InvalidQuery):
        mon.list_connections(0, 1001)


def test_reconfigure_applies_live_settings(env):
    """(The restart-only keys, max_processes here, are named by config.restart_only_changes:
    tests/unit/test_restart_keys.py.)"""
    probe, _, _, mon = env
    new = dataclasses.replace(ConnectionsConfig(), trace_udp_sends=False, recent_records=5, max_processes=128)
    mon.reconfigure(new)
    assert probe.udp_sends is False
    assert mon.recent.capacity == 5


def test_observation_gathers_every_read_per_command(env):
    from netwatchd.alerting.observation import TickObservation

    probe, clock, _, mon = env
    probe.counters[(100, 0)] = ("curl", Counts(3, 1, 0, 0, 0, 0))
    mon.refresh()  # a Summary's refresh reads the kernel too: still observed
    mon.summary(0, "curl", 60)
    probe.counters[(100, 0)] = ("curl", Counts(5, 1, 0, 0, 0, 0))
    probe.counters[(200, 0)] = ("curl", Counts(0, 2, 0, 0, 0, 0))
    clock.t += 1
    mon.tick()
    obs = TickObservation(time_usec=1)
    mon.take_observation(obs)
    assert (obs.command_connects, obs.command_failed, obs.command_pids) == (
        {"curl": 8}, {"curl": 3}, {"curl": [100, 200]})
    again = TickObservation(time_usec=2)
    mon.take_observation(again)
    assert again.command_connects == {}


def test_connects_to_ip_destinations_are_beacon_starts(env):
    """connect() records to IPv4/IPv6 addresses become the observation's connection starts, per
    (command, destination, port), exact times, and no name (a name a device looked up is that
    device's, never a label for our commands); UDP sends and unix sockets do not."""
    from netwatchd.alerting.observation import TickObservation

    probe, _, _, mon = env
    probe.raw = [build_event(c["event"]) for c in CASES]
    mon.refresh()
    records = {r["command"]: r for r in mon.list_connections(0, 100)[0]}
    obs = TickObservation(time_usec=1)
    mon.take_observation(obs)
    c = obs.command_starts
    got = {(c.sources[c.source[i]], int(c.port[i])): (c.address_text(i), int(c.time_usec[i])) for i in range(len(c))}
    assert set(got) == {("command:curl", 443), ("command:nc", 1), ("command:python3", 80), ("command:dig", 53),
                        ("command:abcdefghijklmnop", 1)}
    assert got[("command:curl", 443)] == (records["curl"]["destination"], records["curl"]["timestamp_usec"])
    assert c.names == {} and obs.connection_starts == []  # no name; the list form is the devices'
    again = TickObservation(time_usec=2)
    mon.take_observation(again)
    assert len(again.command_starts) == 0
