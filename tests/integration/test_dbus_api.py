"""The D-Bus API as users meet it: a real kernel, a real dbus-daemon with the project's policy, and
busctl / dbus-send as clients. One daemon serves the whole module.

A child process with a command name of its own (a copy of python3 called nwtest<hex>) makes a known
number of TCP connects to 127.0.0.1; Summary and ListConnections must report exactly those.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import time

import pytest

import netwatchd
from tests.conftest import require_tools
from tests.support.daemon import BUS_NAME, INTERFACE, OBJECT_PATH, DaemonProcess, as_user, dbus_send_error, unvariant
from tests.support.processes import ECONNREFUSED, ConnectChild

pytestmark = pytest.mark.root

OK_CONNECTS = 103  # more than ListConnections' default limit of 100 together with the refused ones
REFUSED_CONNECTS = 4
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"


@pytest.fixture(scope="module")
def daemon(make_daemon):
    """About ListConnections, so about connections.recent_records: other people's load on this
    host is traced too; keep plenty of recent records so ours are still there when asked."""
    require_tools("dbus-send", "setpriv")
    before_start_usec = time.time_ns() // 1000
    d = make_daemon({"connections": {"recent_records": 200000}}, about=("connections.recent_records",))
    d.before_start_usec, d.after_ready_usec = before_start_usec, time.time_ns() // 1000
    return d


@pytest.fixture(scope="module")
def child(daemon):
    with ConnectChild(OK_CONNECTS, REFUSED_CONNECTS) as c:
        yield c


def call_fails(d: DaemonProcess, method: str, signature: str, *args, user=None) -> str:
    """busctl's stderr for a call that must fail."""
    r = d.busctl("call", BUS_NAME, OBJECT_PATH, INTERFACE, method, signature, *map(str, args), user=user, check=False)
    assert r.returncode != 0, f"{method}{args} succeeded: {r.stdout}"
    return r.stderr.strip()


def summary(d: DaemonProcess, pid: int, command: str, duration: int) -> dict:
    (answer,) = d.call("Summary", "usu", pid, command, duration)
    return unvariant(answer)


def connections(d: DaemonProcess, pid: int, limit: int):
    records, truncated = d.call("ListConnections", "uu", pid, limit)
    return [unvariant(r) for r in records], truncated


def expected_message(who: str, c: ConnectChild, duration: int, s: dict) -> str:
    def ms(usec):  # the percentiles themselves are checked against the answer's fields
        return f"{usec / 1000:.1f} ms" if usec >= 1000 else f"{usec} us"
    return (f"{who} made {c.total} connection attempts in the last {duration} s: "
            f"{c.ok} succeeded, {c.refused} failed ({c.refused} refused, 0 timed out, 0 other), 0 in progress; "
            f"handshake latency p50 {ms(s['latency_p50_usec'])}, p90 {ms(s['latency_p90_usec'])}, "
            f"p99 {ms(s['latency_p99_usec'])}")


# -- root may call; answers are exact ------------------------------------------------------------

def test_root_gets_typed_answers(daemon, child):
    out = daemon.busctl("--json=short", "call", BUS_NAME, OBJECT_PATH, INTERFACE, "Summary", "usu",
                        "0", "nwnobody", "60").stdout
    reply = json.loads(out)
    assert reply["type"] == "a{sv}"
    types = {k: v["type"] for k, v in reply["data"][0].items()}
    for name, sig in {"pid": "u", "command": "s", "duration_sec": "u", "total_attempts": "t",
                      "succeeded": "t", "failed": "t", "message": "s"}.items():
        assert types.get(name) == sig, f"Summary field {name}: {types.get(name)} != {sig}"

    out = daemon.busctl("--json=short", "call", BUS_NAME, OBJECT_PATH, INTERFACE, "ListConnections", "uu",
                        "0", "1").stdout
    reply = json.loads(out)
    assert reply["type"] == "aa{sv}b"
    records, truncated = reply["data"]
    # the child's connects are there, so exactly one record comes back and more are left
    assert (len(records), truncated) == (1, True)


def test_summary_by_command_is_exact(daemon, child):
    s = summary(daemon, 0, child.command, 60)
    assert (s["total_attempts"], s["succeeded"], s["failed"]) == (child.total, child.ok, child.refused)
    assert (s["in_progress"], s["udp_sends"]) == (0, 0)
    assert (s["pid"], s["command"], s["duration_sec"]) == (0, child.command, 60)
    assert (s["refused"], s["timed_out"], s["other_failed"], s["unknown"]) == (child.refused, 0, 0, 0)
    assert s["latency_samples"] == child.ok  # every accepted loopback handshake, under a second
    assert 0 < s["latency_p50_usec"] <= s["latency_p90_usec"] <= s["latency_p99_usec"] < 1_000_000
    assert s["message"] == expected_message(f"command {child.command!r}", child, 60, s)


def test_summary_by_pid_is_exact(daemon, child):
    s = summary(daemon, child.pid, "", 3600)
    assert (s["total_attempts"], s["succeeded"], s["failed"]) == (child.total, child.ok, child.refused)
    assert (s["pid"], s["command"], s["duration_sec"]) == (child.pid, "", 3600)
    assert s["commands"] == [child.command]
    assert s["message"] == expected_message(f"pid {child.pid} ({child.command})", child, 3600, s)


def test_list_connections_shows_each_connect(daemon, child):
    records, truncated = connections(daemon, child.pid, 1000)
    lost = daemon.get_property("EventsLost")
    assert len(records) == child.total, f"{len(records)} records for {child.total} connects (EventsLost={lost})"
    assert truncated is False
    stamps = [r["timestamp_usec"] for r in records]
    assert stamps == sorted(stamps, reverse=True), "not newest first"
    assert child.start_usec - 1_000_000 <= stamps[-1] <= stamps[0] <= child.end_usec + 1_000_000
    for r in records:
        assert (r["pid"], r["tid"], r["command"], r["uid"]) == (child.pid, child.pid, child.command, 0)
        assert (r["kind"], r["family"], r["transport"], r["destination"]) == ("connect", "inet", "tcp", "127.0.0.1")
    # the child refused-connected last, so the newest records are the refused ones
    refused, accepted = records[:child.refused], records[child.refused:]
    for r in refused:
        assert (r["port"], r["return_code"], r["error"], r["outcome"]) == (
            child.closed_port, -ECONNREFUSED, "ECONNREFUSED", "refused")
        assert r["end_error"] == "ECONNREFUSED" and r["latency_usec"] > 0
    for r in accepted:
        assert (r["port"], r["return_code"], r["error"], r["outcome"]) == (child.port, 0, "", "succeeded")


def test_list_connections_limit_and_truncated(daemon, child):
    everything, _ = connections(daemon, child.pid, 1000)
    default, truncated = connections(daemon, child.pid, 0)
    assert (len(default), truncated) == (100, True), "limit 0 means the default of 100"
    assert default == everything[:100]
    five, truncated = connections(daemon, child.pid, 5)
    assert (five, truncated) == (everything[:5], True)
    exact, truncated = connections(daemon, child.pid, child.total)
    assert (len(exact), truncated) == (child.total, False)
    one_short, truncated = connections(daemon, child.pid, child.total - 1)
    assert (len(one_short), truncated) == (child.total - 1, True)
    anyone, truncated = connections(daemon, 0, 3)
    assert len(anyone) == 3 and truncated is True  # pid 0 = all processes; this host has more


def test_unknown_command_and_pid_give_an_empty_answer(daemon):
    name = "nwnone" + secrets.token_hex(4)
    s = summary(daemon, 0, name, 60)
    assert (s["total_attempts"], s["succeeded"], s["failed"], s["in_progress"]) == (0, 0, 0, 0)
    assert s["message"] == (f"command {name!r} made 0 connection attempts in the last 60 s: 0 succeeded, "
                            "0 failed (0 refused, 0 timed out, 0 other), 0 in progress")
    unused_pid = 4_000_000_000  # above any pid_max
    s = summary(daemon, unused_pid, "", 60)
    assert (s["total_attempts"], s["commands"]) == (0, [])
    assert s["message"].startswith(f"pid {unused_pid} made 0 connection attempts")
    assert connections(daemon, unused_pid, 0) == ([], False)


# -- bad arguments: InvalidArgs with a message naming the argument -------------------------------

BAD_CALLS = [
    pytest.param("Summary", "usu", (1, "curl", 60), ["uint32:1", "string:curl", "uint32:60"],
                 "give either a pid or a command, not both (pid=1, command='curl')", id="pid-and-command"),
    pytest.param("Summary", "usu", (0, "", 60), ["uint32:0", "string:", "uint32:60"],
                 "give a pid (non-zero) or a command name (non-empty)", id="neither"),
    pytest.param("Summary", "usu", (0, "curl", 0), ["uint32:0", "string:curl", "uint32:0"],
                 "duration_sec must be between 1 and 3600, got 0", id="duration-0"),
    pytest.param("Summary", "usu", (0, "curl", 3601), ["uint32:0", "string:curl", "uint32:3601"],
                 "duration_sec must be between 1 and 3600, got 3601", id="duration-3601"),
    pytest.param("Summary", "usu", (0, "sixteen-letters!", 60), ["uint32:0", "string:sixteen-letters!", "uint32:60"],
                 "command 'sixteen-letters!' is longer than 15 bytes; the kernel keeps only the first 15",
                 id="command-too-long"),
    pytest.param("ListConnections", "uu", (0, 1001), ["uint32:0", "uint32:1001"],
                 "limit must be at most 1000, got 1001", id="limit-1001"),
    pytest.param("ListDevicesPage", "uu", (0, 1001), ["uint32:0", "uint32:1001"],
                 "limit must be at most 1000, got 1001", id="devices-page-limit-1001"),
]


@pytest.mark.parametrize("method, signature, args, dbus_send_args, message", BAD_CALLS)
def test_bad_arguments_are_invalid_args_with_a_message(daemon, method, signature, args, dbus_send_args, message):
    assert dbus_send_error(daemon.bus, method, dbus_send_args) == (INVALID_ARGS, message)
    assert call_fails(daemon, method, signature, *args) == f"Call failed: {message}"


def test_limit_1000_is_still_allowed(daemon, child):
    records, truncated = connections(daemon, 0, 1000)
    assert records and len(records) <= 1000 and (not truncated or len(records) == 1000)
    mine, truncated = connections(daemon, child.proc.pid, 1000)  # exactly the child's, none cut
    assert (len(mine), truncated) == (child.total, False)


# -- the bus policy ------------------------------------------------------------------------------

def test_unprivileged_user_is_denied_but_may_ping_and_introspect(daemon):
    assert "Access denied" in call_fails(daemon, "Summary", "usu", 0, "curl", 60, user="nobody")
    assert "Access denied" in call_fails(daemon, "ListConnections", "uu", 0, 0, user="nobody")
    r = daemon.busctl("get-property", BUS_NAME, OBJECT_PATH, INTERFACE, "Version", user="nobody", check=False)
    assert r.returncode != 0 and "Access denied" in r.stderr
    name, message = dbus_send_error(daemon.bus, "Summary", ["uint32:0", "string:curl", "uint32:60"],
                                    prefix=as_user("nobody", "nogroup"))
    assert name == ACCESS_DENIED and 'member="Summary"' in message

    daemon.busctl("call", BUS_NAME, OBJECT_PATH, "org.freedesktop.DBus.Peer", "Ping", user="nobody")
    xml = json.loads(daemon.busctl("--json=short", "call", BUS_NAME, OBJECT_PATH,
                                   "org.freedesktop.DBus.Introspectable", "Introspect", user="nobody").stdout)["data"][0]
    assert f'<interface name="{INTERFACE}">' in xml
    assert '<method name="Summary">' in xml and '<method name="ListConnections">' in xml


def test_group_netwatchd_via_supplementary_groups_is_allowed(daemon):
    """The bus takes the caller's groups from its credentials: nobody plus group netwatchd may call."""
    r = subprocess.run([*as_user("nobody", "nogroup", ["netwatchd"]), "busctl", f"--address={daemon.bus.address}",
                        "--json=short", "call", BUS_NAME, OBJECT_PATH, INTERFACE, "Summary", "usu", "0", "curl", "60"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert unvariant(json.loads(r.stdout)["data"][0])["command"] == "curl"


@pytest.fixture
def netwatchd_member():
    """A temporary system user whose supplementary groups include netwatchd; removed afterwards."""
    require_tools("useradd", "userdel")
    name = "nwt" + secrets.token_hex(4)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--groups", "netwatchd", name], check=True, capture_output=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


def test_member_of_group_netwatchd_is_allowed(daemon, child, netwatchd_member):
    cmd = ["setpriv", f"--reuid={netwatchd_member}", f"--regid={netwatchd_member}", "--init-groups",
           "busctl", f"--address={daemon.bus.address}", "--json=short", "call", BUS_NAME, OBJECT_PATH, INTERFACE]
    r = subprocess.run([*cmd, "Summary", "usu", "0", child.command, "60"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert unvariant(json.loads(r.stdout)["data"][0])["total_attempts"] == child.total
    r = subprocess.run([*cmd, "ListConnections", "uu", str(child.pid), "2"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["data"][0]) == 2


# -- properties ----------------------------------------------------------------------------------

def typed_property(d: DaemonProcess, name: str):
    out = d.busctl("--json=short", "get-property", BUS_NAME, OBJECT_PATH, INTERFACE, name).stdout
    reply = json.loads(out)
    return reply["type"], reply["data"]


def test_properties(daemon, child):
    assert typed_property(daemon, "Version") == ("s", netwatchd.__version__)
    sig, started = typed_property(daemon, "StartedAtUSec")
    assert sig == "t" and daemon.before_start_usec <= started <= daemon.after_ready_usec
    for name in ("EventsLost", "ProcessesUntracked"):  # a quiet host: nothing lost, nobody untracked
        assert typed_property(daemon, name) == ("t", 0), name
    sig, attempts = typed_property(daemon, "ConnectAttempts")
    assert sig == "t" and attempts >= child.total
    sig, programs = typed_property(daemon, "ProgramsAttached")
    assert sig == "as" and {"sys_exit_connect", "nw_connect4", "nw_connect6"} <= set(programs)
    assert typed_property(daemon, "ConfigFile") == ("s", str(daemon.config_path))


# -- the window: last, as it waits for the child's connects to age -------------------------------

def test_summary_counts_only_the_window(daemon, child):
    time.sleep(max(0.0, child.end_time + 3.5 - time.time()))
    s = summary(daemon, child.pid, "", 1)
    assert s["total_attempts"] == 0, s["message"]
    s = summary(daemon, child.pid, "", 60)
    assert s["total_attempts"] == child.total, s["message"]
    assert os.path.exists(f"/proc/{child.pid}")
