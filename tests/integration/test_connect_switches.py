"""README claims about the connect path's switches, against the real kernel and a real daemon
(shipped config, time compressed):

- connections.trace_udp_sends: false attaches neither nw_sendmsg4 nor nw_sendmsg6, and a process
  that sends unconnected UDP has udp_sends 0; a reload turning it on attaches both and counts
  exactly what is sent from then on.
- connections.max_processes: a process that finds the kernel's per-process map full is not
  counted (Summary by its pid says 0) and each of its connects is counted in ProcessesUntracked.
"""
from __future__ import annotations

import pytest

from tests.conftest import require_root_and_bcc
from tests.support.daemon import DaemonProcess, unvariant
from tests.support.processes import NamedChild

pytestmark = pytest.mark.root

TICK = 0.2
SENDMSG = {"nw_sendmsg4", "nw_sendmsg6"}


@pytest.fixture
def bus(bus):
    """The session's bus; each test's daemons are gone when it ends."""
    require_root_and_bcc()
    return bus


def summary_of(d: DaemonProcess, pid: int) -> dict:
    (answer,) = d.call("Summary", "usu", pid, "", 60)
    return unvariant(answer)


def test_connections_trace_udp_sends_false_counts_no_udp_sends_until_a_reload_turns_it_on(bus):
    config = {"tick_interval_sec": TICK, "connections": {"trace_udp_sends": False}}
    with DaemonProcess(bus, config, about=("connections.trace_udp_sends",)) as d, NamedChild() as child:
        assert SENDMSG.isdisjoint(d.get_property("ProgramsAttached")), d.get_property("ProgramsAttached")
        child.udp_sends(25)
        child.refused_connects(3)  # the process is counted; only its UDP sends are not
        s = summary_of(d, child.pid)
        assert (s["udp_sends"], s["total_attempts"], s["failed"]) == (0, 3, 3), s

        d.reload({"tick_interval_sec": TICK, "connections": {"trace_udp_sends": True}})
        assert SENDMSG <= set(d.get_property("ProgramsAttached")), d.get_property("ProgramsAttached")
        child.udp_sends(17)
        s = summary_of(d, child.pid)
        assert (s["udp_sends"], s["total_attempts"], s["failed"]) == (17, 3, 3), s

        d.reload({"tick_interval_sec": TICK, "connections": {"trace_udp_sends": False}})
        assert SENDMSG.isdisjoint(d.get_property("ProgramsAttached"))
        child.udp_sends(9)
        assert summary_of(d, child.pid)["udp_sends"] == 17


MAX_PROCESSES = 64  # the smallest the config accepts
CHILDREN = MAX_PROCESSES + 36


def test_connections_max_processes_overflow_is_counted_in_processes_untracked(bus):
    """100 live processes, one refused connect each, against a map of 64: at least 36 of them
    cannot be tracked. Each of ours is either counted exactly (Summary by pid: 1 failed) or not
    at all (0), and every untracked one is in ProcessesUntracked. Other processes on the host
    take slots and may be untracked too, so the property can exceed ours but never fall short."""
    config = {"tick_interval_sec": TICK, "connections": {"max_processes": MAX_PROCESSES}}
    with DaemonProcess(bus, config, about=("connections.max_processes",)) as d, NamedChild() as parent:
        before = d.get_property("ProcessesUntracked")
        pids = parent.fork_connecting(CHILDREN)
        after = d.get_property("ProcessesUntracked")
        answers = {pid: summary_of(d, pid) for pid in pids}
        tracked = [p for p, s in answers.items() if s["total_attempts"] == 1]
        untracked = [p for p, s in answers.items() if s["total_attempts"] == 0]
        assert all(answers[p]["failed"] == 1 for p in tracked), answers
        assert len(tracked) + len(untracked) == CHILDREN, answers
        assert len(tracked) <= MAX_PROCESSES and len(untracked) >= CHILDREN - MAX_PROCESSES, len(tracked)
        assert after - before >= len(untracked), (before, after, len(untracked))
        # the command's total is the tracked ones' only
        (by_command,) = d.call("Summary", "usu", 0, parent.command, 60)
        assert unvariant(by_command)["total_attempts"] == len(tracked)


def test_connections_record_events_false_counts_exactly_and_keeps_no_records(bus):
    """connections.record_events: false: no per-connect records, and the counts are exactly what
    they are with records (they never depended on records). The connect hooks stay: they note
    each TCP connect's socket, whose handshake's end sock_ops counts."""
    config = {"tick_interval_sec": TICK, "connections": {"record_events": False}}
    with DaemonProcess(bus, config, about=("connections.record_events",)) as d, NamedChild() as child:
        attached = set(d.get_property("ProgramsAttached"))
        assert {"sys_exit_connect", "nw_connect4", "nw_connect6", "nw_sockops"} <= attached, attached
        child.refused_connects(7)
        child.udp_sends(4)
        s = summary_of(d, child.pid)
        assert (s["total_attempts"], s["failed"], s["udp_sends"]) == (7, 7, 4), s
        records, truncated = d.call("ListConnections", "uu", child.pid, 0)
        assert (records, truncated) == ([], False)
        assert d.get_property("EventsLost") == 0  # nothing was recorded, so nothing was lost
