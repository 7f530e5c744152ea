"""netwatchctl against a real daemon on a private system bus (DBUS_SYSTEM_BUS_ADDRESS): what it
prints, with and without --json, and its exit codes when the daemon refuses, is not there, or the
bus policy denies the caller."""
from __future__ import annotations

import json
import re
import os
import subprocess

import pytest

import netwatchd
from tests.conftest import require_tools, tool
from tests.support.daemon import PrivateSystemBus, as_user
from tests.support.processes import ECONNREFUSED, ConnectChild

pytestmark = pytest.mark.root

OK, REFUSED = 7, 3
DENIED = ("netwatchctl: access denied by the bus policy: only root and members of group netwatchd "
          "may query netwatchd (")
NOT_RUNNING = "netwatchctl: netwatchd is not running or not reachable: "


@pytest.fixture(scope="module")
def daemon(make_daemon):
    require_tools("setpriv")
    return make_daemon()


@pytest.fixture(scope="module")
def child(daemon):
    with ConnectChild(OK, REFUSED) as c:
        yield c


def ctl(address: str, *args: str, prefix=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
    return subprocess.run([*(prefix or []), tool("netwatchctl"), *args], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def ok(address: str, *args: str) -> str:
    r = ctl(address, *args)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    return r.stdout


# -- answers -------------------------------------------------------------------------------------

def test_status(daemon):
    lines = [line.strip() for line in ok(daemon.bus.address, "status").splitlines()]
    programs = daemon.get_property("ProgramsAttached")
    assert f"Version: {netwatchd.__version__}" in lines
    assert f"Config: {daemon.config_path}" in lines
    assert f"Programs: {', '.join(programs)}" in lines
    assert any(line.startswith("Started: 20") for line in lines), lines


def test_status_json(daemon, child):
    props = json.loads(ok(daemon.bus.address, "status", "--json"))
    assert props["Version"] == netwatchd.__version__
    assert props["ConfigFile"] == str(daemon.config_path)
    assert props["StartedAtUSec"] == daemon.get_property("StartedAtUSec")
    assert {"sys_exit_connect", "nw_connect4", "nw_connect6"} <= set(props["ProgramsAttached"])
    # a quiet host: no record lost, no process beyond max_processes; the child's connects seen
    assert (props["EventsLost"], props["ProcessesUntracked"]) == (0, 0)
    assert isinstance(props["ConnectAttempts"], int) and props["ConnectAttempts"] >= child.total


def test_summary_by_command(daemon, child):
    out = ok(daemon.bus.address, "summary", "--command", child.command, "--duration", "120")
    assert out.startswith(f"command {child.command!r} made {child.total} connection attempts in the last 120 s: "
                          f"{OK} succeeded, {REFUSED} failed ({REFUSED} refused, 0 timed out, 0 other), 0 in progress; "
                          f"handshake latency p50 ")
    assert re.fullmatch(r".*; handshake latency p50 \d+(\.\d)? m?s, p90 \d+(\.\d)? m?s, p99 \d+(\.\d)? m?s\n",
                        out.replace(" us", " s")), out


def test_summary_by_pid_json(daemon, child):
    answer = json.loads(ok(daemon.bus.address, "--json", "summary", "--pid", str(child.pid)))
    assert (answer["total_attempts"], answer["succeeded"], answer["failed"]) == (child.total, OK, REFUSED)
    assert (answer["pid"], answer["commands"], answer["duration_sec"]) == (child.pid, [child.command], 60)


def test_connections_json(daemon, child):
    answer = json.loads(ok(daemon.bus.address, "connections", "--pid", str(child.pid), "--json"))
    records = answer["connections"]
    assert (len(records), answer["truncated"]) == (child.total, False)
    assert [r["return_code"] for r in records] == [-ECONNREFUSED] * REFUSED + [0] * OK  # newest first
    assert {(r["command"], r["family"], r["transport"], r["destination"]) for r in records} == {
        (child.command, "inet", "tcp", "127.0.0.1")}
    answer = json.loads(ok(daemon.bus.address, "connections", "--pid", str(child.pid), "--limit", "4", "--json"))
    assert (len(answer["connections"]), answer["truncated"]) == (4, True)
    assert answer["connections"] == records[:4]


def test_connections_table(daemon, child):
    lines = ok(daemon.bus.address, "connections", "--pid", str(child.pid), "--limit", "4").splitlines()
    assert lines[0].split() == ["TIME", "PID", "COMMAND", "UID", "KIND", "TRANSPORT", "DESTINATION", "LATENCY",
                                "RESULT"]
    rows, note = lines[1:-1], lines[-1]
    assert note == "(more records match; raise --limit to see them)"
    assert len(rows) == 4
    for row in rows[:REFUSED]:
        fields = row.split()[2:]
        assert fields[:6] + fields[7:] == [str(child.pid), child.command, "0", "connect", "tcp",
                                           f"127.0.0.1:{child.closed_port}", "refused", "(ECONNREFUSED)"]
        assert re.fullmatch(r"\d+us|\d+\.\dms", fields[6]), fields  # SYN sent -> RST
    fields = rows[REFUSED].split()[2:]
    assert fields[:6] + fields[7:] == [str(child.pid), child.command, "0", "connect", "tcp",
                                       f"127.0.0.1:{child.port}", "succeeded"]
    assert re.fullmatch(r"\d+us|\d+\.\dms", fields[6]), fields  # the loopback handshake, timed


# -- exit codes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["summary", "--command", "curl", "--duration", "0"], "duration_sec must be between 1 and 3600, got 0"),
    (["summary", "--command", "curl", "--duration", "3601"], "duration_sec must be between 1 and 3600, got 3601"),
    (["connections", "--limit", "1001"], "limit must be at most 1000, got 1001"),
])
def test_a_refused_request_exits_1_with_the_daemons_message(daemon, args, message):
    r = ctl(daemon.bus.address, *args)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"netwatchctl: {message}\n")


@pytest.mark.parametrize("args, message", [
    (["summary"], "one of the arguments --pid --command is required"),
    (["summary", "--pid", "1", "--command", "curl"], "argument --command: not allowed with argument --pid"),
    (["summary", "--pid", "-1"], "netwatchctl: --pid must not be negative"),
    (["connections", "--limit", "-5"], "netwatchctl: --pid and --limit must not be negative"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_2(daemon, args, message):
    r = ctl(daemon.bus.address, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_daemon_not_running_exits_3(tmp_path):
    require_tools("dbus-daemon")
    with PrivateSystemBus() as empty_bus:  # a bus, but nobody owns the name
        for args in (["status"], ["summary", "--command", "curl"], ["connections"]):
            r = ctl(empty_bus.address, *args)
            assert r.returncode == 3 and r.stderr.startswith(NOT_RUNNING), (args, r.stderr)
            assert "org.netwatchd.Netwatchd1" in r.stderr
    r = ctl(f"unix:path={tmp_path / 'no-bus-here'}", "status")  # no bus at all
    assert r.returncode == 3 and r.stderr.startswith(NOT_RUNNING + "cannot connect to the system bus"), r.stderr


def test_access_denied_exits_4(daemon):
    nobody = as_user("nobody", "nogroup")
    for args in (["status"], ["summary", "--command", "curl"], ["connections"]):
        r = ctl(daemon.bus.address, *args, prefix=nobody)
        assert r.returncode == 4 and r.stderr.startswith(DENIED), (args, r.stderr)
        assert r.stdout == ""


def test_group_netwatchd_may_use_it(daemon, child):
    member = as_user("nobody", "nogroup", ["netwatchd"])
    r = ctl(daemon.bus.address, "--json", "summary", "--command", child.command, prefix=member)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total_attempts"] == child.total
