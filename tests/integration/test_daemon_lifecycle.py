"""The daemon's process model as systemd sees it: READY only when it can answer, STATUS and
WATCHDOG from the event loop, SIGHUP reloads (a bad file is rejected, the running config stays),
SIGTERM/SIGKILL leave none of its BPF programs behind, one daemon per bus name, --check-config.

BPF programs are identified by the ids the daemon's own file descriptors hold (/proc/PID/fdinfo),
never by name: other people may run daemons with the same program names on this host.
"""
from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, Set

import pytest

from netwatchd.kernel.headers import cgroup2_root
from tests.conftest import require_root_and_bcc, require_tools, tool
from tests.support.daemon import (BUS_NAME, INTERFACE, OBJECT_PATH, DaemonProcess, NotifyReceiver, PrivateSystemBus,
                           fd_infos, unvariant)

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO / "config" / "netwatchd.yaml"
BASE_CONFIG = {"tick_interval_sec": 0.2, "connections": {"max_window_sec": 60}}
RELOAD_KEYS = ("connections.max_window_sec", "connections.max_processes")
WATCHDOG_USEC = 500_000  # the daemon pings every 0.25 s
STATUS_RE = re.compile(r"STATUS=watching connect\(\): (\d+) attempts, \d+ processes tracked, \d+ records lost; "
                       r"\d+ devices on \S.*")
CGROUP_PROGRAMS = {"nw_connect4", "nw_connect6", "nw_sockops", "nw_sendmsg4", "nw_sendmsg6"}


# -- helpers -------------------------------------------------------------------------------------

def mark(notify: NotifyReceiver) -> int:
    """Index the next message will get, once what was already sent has been read."""
    time.sleep(0.15)
    return len(notify.messages)


def lines_of(notify: NotifyReceiver, prefix: str) -> list:
    return [line for m in notify.messages for line in m.split("\n") if line.startswith(prefix)]


def bpf_fd_ids(pid: int) -> Dict[str, Set[int]]:
    """{'prog': ids, 'link': ids} of the BPF programs and links this process holds open."""
    out: Dict[str, Set[int]] = {"prog": set(), "link": set()}
    for target, fields in fd_infos(pid):
        if target == "anon_inode:bpf-prog":
            out["prog"].add(int(fields["prog_id"]))
        elif target == "anon_inode:bpf_link":
            out["link"].add(int(fields["link_id"]))
    return out


def bpftool(*args: str):
    r = subprocess.run(["bpftool", "--json", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout or "[]")


def kernel_programs() -> Dict[int, dict]:
    return {p["id"]: p for p in bpftool("prog", "show")}


def kernel_links() -> Set[int]:
    return {link["id"] for link in bpftool("link", "show")}


def root_cgroup_programs() -> Set[int]:
    return {p["id"] for p in bpftool("cgroup", "show", cgroup2_root())}


def assert_gone(progs: Set[int], links: Set[int], timeout: float = 10) -> None:
    """The kernel frees programs a moment after the last reference goes: poll a little."""
    deadline = time.monotonic() + timeout
    while True:
        left_progs = progs & set(kernel_programs())
        left_links = links & kernel_links()
        attached = progs & root_cgroup_programs()
        if not (left_progs or left_links or attached):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: programs {left_progs}, links {left_links}, "
                                 f"attached to the root cgroup {attached}")
        time.sleep(0.2)


def name_owner_pid(bus: PrivateSystemBus):
    r = subprocess.run(["busctl", f"--address={bus.address}", "--json=short", "call", "org.freedesktop.DBus",
                        "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", BUS_NAME],
                       capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout)["data"][0] if r.returncode == 0 else None


def summary(d: DaemonProcess, duration: int, command: str = "curl") -> dict:
    (answer,) = d.call("Summary", "usu", 0, command, duration)
    return unvariant(answer)


def summary_refused(d: DaemonProcess, duration: int) -> str:
    r = d.busctl("call", BUS_NAME, OBJECT_PATH, INTERFACE, "Summary", "usu", "0", "curl", str(duration), check=False)
    assert r.returncode != 0, f"Summary with duration {duration} was accepted: {r.stdout}"
    return r.stderr.strip()


def owned_programs(d: DaemonProcess):
    """This daemon's program and link ids, and the names the kernel gives its programs."""
    ids = bpf_fd_ids(d.pid)
    kernel = kernel_programs()
    names = {kernel[i]["name"] for i in ids["prog"] if i in kernel}
    return ids["prog"], ids["link"], names


# -- fixtures ------------------------------------------------------------------------------------

def require_integration():
    require_root_and_bcc()
    require_tools("dbus-daemon", "busctl", "bpftool")


@pytest.fixture(scope="module")
def daemon(make_daemon):
    """One daemon for the tests that leave it running: fast ticks, a watchdog. The reload tests
    are about connections.max_window_sec (60 here; a reload's effect shows in what Summary
    accepts) and connections.max_processes (a reload names it restart-only)."""
    require_integration()
    return make_daemon(BASE_CONFIG, watchdog_usec=WATCHDOG_USEC, about=RELOAD_KEYS)


@pytest.fixture
def fresh():
    """Daemons of the test's own on a bus of their own (the module's daemon owns the name on
    the session's; a test restarts this one), without a watchdog; the test may kill them."""
    require_integration()
    with contextlib.ExitStack() as stack:
        own_bus = stack.enter_context(PrivateSystemBus())
        yield lambda config=None: stack.enter_context(DaemonProcess(own_bus, config or {}))


# -- READY, STATUS, WATCHDOG ---------------------------------------------------------------------

@pytest.mark.root
def test_ready_only_when_programs_are_attached_and_the_name_is_owned(fresh):
    d = fresh()
    # start() returned on READY=1: from that moment on, everything must already be in place
    assert name_owner_pid(d.bus) == d.pid
    interfaces = d.get_property("Interfaces")  # the shipped `auto`: every up interface but lo
    assert interfaces and "lo" not in interfaces
    attached = set(d.get_property("ProgramsAttached"))
    path = "tcx" if any(p.endswith(" (tcx)") for p in attached) else "clsact"  # TCX from Linux 6.6
    tc = {f"nw_tc_{direction}@{name} ({path})" for name in interfaces for direction in ("ingress", "egress")}
    # the connect() exit, the RST mark, the cgroup hooks (sock_ops ends the handshakes)
    assert attached == {"sys_exit_connect", "tcp_receive_reset"} | CGROUP_PROGRAMS | tc
    answer = summary(d, 60, command="nw-none-ready")  # answers at READY, exactly (no such command)
    assert (answer["total_attempts"], answer["message"]) == (
        0, "command 'nw-none-ready' made 0 connection attempts in the last 60 s: 0 succeeded, 0 failed "
           "(0 refused, 0 timed out, 0 other), 0 in progress")
    progs, links, names = owned_programs(d)
    assert CGROUP_PROGRAMS | {"nw_tc_ingress", "nw_tc_egress"} <= names
    assert any(n.endswith("sys_exit_connect") for n in names), names
    kernel = kernel_programs()
    assert {i for i in progs if kernel[i]["name"] in CGROUP_PROGRAMS} <= root_cgroup_programs()
    # cgroup links, the RST mark's two raw tracepoint programs (links since 5.8), and on TCX a link
    # per hook (clsact filters and perf tracepoints are no links)
    assert len(links) == len(CGROUP_PROGRAMS) + 2 + (len(tc) if path == "tcx" else 0)

    ready = [m for m in d.notify.messages if "READY=1" in m.split("\n")]
    assert len(ready) == 1 and STATUS_RE.search(ready[0]), d.notify.messages
    time.sleep(0.6)
    assert not lines_of(d.notify, "WATCHDOG="), "WATCHDOG=1 sent although no watchdog was asked for"


@pytest.mark.root
def test_status_lines_come_from_the_event_loop(daemon):
    since = mark(daemon.notify)
    time.sleep(1.2)
    status = [line for m in daemon.notify.messages[since:] for line in m.split("\n") if line.startswith("STATUS=")]
    assert len(status) >= 3, f"tick_interval_sec 0.2 but STATUS lines in 1.2 s: {status}"
    assert all(STATUS_RE.fullmatch(line) for line in status), status
    attempts = [int(STATUS_RE.fullmatch(line).group(1)) for line in status]
    assert attempts == sorted(attempts)


@pytest.mark.root
def test_watchdog_is_fed_repeatedly(daemon):
    since = mark(daemon.notify)
    time.sleep(1.5)
    pings = [m for m in daemon.notify.messages[since:] if "WATCHDOG=1" in m.split("\n")]
    # every 0.25 s: 6 expected; a loaded 2-core host may delay some, none may go missing for long
    assert len(pings) >= 3, f"{len(pings)} WATCHDOG=1 in 1.5 s with WATCHDOG_USEC={WATCHDOG_USEC}"


# -- SIGHUP --------------------------------------------------------------------------------------

BROKEN_FILES = [
    pytest.param("tick_interval_sec: 0.2\nconnections:\n  max_window_sec: 120: 5\n",
                 "malformed YAML: line 3, column 22: mapping values are not allowed here", id="malformed-yaml"),
    pytest.param('tick_interval_sec: 0.2\nconnections:\n  max_window_sec: "lots"\n',
                 "connections.max_window_sec: expected an integer, got 'lots'", id="wrong-type"),
    pytest.param("tick_interval_sec: 0.2\nconnections:\n  max_window_sec: 120\n  max_windows_sec: 120\n",
                 "connections.max_windows_sec: unknown key", id="unknown-key"),
    pytest.param("tick_interval_sec: 0.2\nconnections:\n  max_window_sec: 7200\n",
                 "connections.max_window_sec: 7200 is out of range 1..3600", id="out-of-range"),
]


@pytest.mark.root
@pytest.mark.parametrize("content, problem", BROKEN_FILES)
def test_reload_with_a_broken_file_keeps_the_running_config(daemon, content, problem):
    daemon.reload(BASE_CONFIG)  # known starting point: max_window_sec 60
    too_long = "Call failed: duration_sec must be between 1 and 60, got 61"
    assert summary_refused(daemon, 61) == too_long
    log_before = len(daemon.log())

    daemon.reload(content)
    assert daemon.proc.poll() is None, "the daemon died on a broken reload"
    expected = f"reload rejected, keeping the running configuration: {daemon.config_path}: {problem}"
    log = daemon.wait_log(expected)
    assert expected in log[log_before:]
    assert summary_refused(daemon, 61) == too_long
    assert summary(daemon, 60)["duration_sec"] == 60
    assert daemon.get_property("ConfigFile") == str(daemon.config_path)


@pytest.mark.root
def test_reload_with_a_valid_file_takes_effect(daemon):
    daemon.reload(BASE_CONFIG)
    assert summary_refused(daemon, 100) == "Call failed: duration_sec must be between 1 and 60, got 100"
    log_before = len(daemon.log())

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    changed = {"tick_interval_sec": 0.2, "connections": {"max_window_sec": 120, "max_processes": 1024}}
    reloading = daemon.reload(changed)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = daemon.notify.messages[reloading].split("\n")
    stamp = [int(line.split("=", 1)[1]) for line in lines if line.startswith("MONOTONIC_USEC=")]
    assert len(stamp) == 1 and before <= stamp[0] <= after, lines

    assert summary(daemon, 100)["duration_sec"] == 100
    assert summary_refused(daemon, 121) == "Call failed: duration_sec must be between 1 and 120, got 121"
    log = daemon.wait_log(f"configuration reloaded from {daemon.config_path}")[log_before:]
    assert f"configuration reloaded from {daemon.config_path}" in log
    assert "changed settings that take effect on restart: connections.max_processes" in log
    daemon.reload(BASE_CONFIG)
    assert summary_refused(daemon, 61) == "Call failed: duration_sec must be between 1 and 60, got 61"


# -- one daemon per bus name ---------------------------------------------------------------------

@pytest.mark.root
def test_a_second_daemon_on_the_same_bus_fails_clearly(daemon):
    second = DaemonProcess(daemon.bus, {"tick_interval_sec": 0.2})
    try:
        with pytest.raises(RuntimeError, match="did not become ready"):
            second.start()
        assert second.proc.returncode == 1
        log = second.log()
        assert (f"cannot own {BUS_NAME} on the system bus" in log
                and "is another netwatchd running?" in log), log
        assert not lines_of(second.notify, "READY=1")
    finally:
        second.cleanup()
    assert name_owner_pid(daemon.bus) == daemon.pid
    assert summary(daemon, 60)["duration_sec"] == 60


# -- losing the bus ------------------------------------------------------------------------------

@pytest.mark.root
def test_a_restarted_bus_gets_the_daemon_back_with_its_state(fresh):
    """dbus-daemon restarts (a package upgrade does it): the daemon says so once, takes its name
    back on the new bus and answers as before, with what it counted before the loss."""
    d = fresh()
    for _ in range(3):  # refused at once: nothing listens on port 1
        subprocess.run(["curl", "-s", "http://127.0.0.1:1/"], capture_output=True, timeout=30)
    deadline = time.monotonic() + 10
    while (before := summary(d, 60))["refused"] < 3:
        assert time.monotonic() < deadline, before
        time.sleep(0.2)
    time.sleep(0.5)  # a poll or two later, so that nothing of curl's is still on its way
    before = summary(d, 60)
    d.bus.restart()
    d.wait_log("lost the system bus (", timeout=10)
    deadline = time.monotonic() + 30
    while name_owner_pid(d.bus) != d.pid:
        assert d.proc.poll() is None, d.log()
        assert time.monotonic() < deadline, f"not back on the bus after 30 s:\n{d.log()}"
        time.sleep(0.2)
    log = d.wait_log(f"back on the system bus as {BUS_NAME}")
    assert log.count("lost the system bus (") == 1, log
    after = summary(d, 60)
    # curl's nscd lookups are connect()s too (AF_UNIX, ENOENT): counted, but not as refused
    assert after == before and before["refused"] == 3, json.dumps([before, after])


# -- stopping ------------------------------------------------------------------------------------

@pytest.mark.root
def test_sigterm_exits_0_and_detaches_everything(fresh):
    d = fresh()
    progs, links, names = owned_programs(d)
    assert CGROUP_PROGRAMS | {"nw_tc_ingress", "nw_tc_egress"} <= names and links
    since = mark(d.notify)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    d.notify.wait_line("STOPPING=1", since, timeout=2)
    assert_gone(progs, links)
    assert name_owner_pid(d.bus) is None
    d.wait_log("stopping")


@pytest.mark.root
def test_sigkill_leaves_nothing_attached_and_a_new_daemon_starts(fresh):
    d = fresh()
    progs, links, names = owned_programs(d)
    assert CGROUP_PROGRAMS <= names
    d.signal(signal.SIGKILL)
    assert d.proc.wait(15) == -signal.SIGKILL
    assert_gone(progs, links)

    again = fresh()
    assert name_owner_pid(again.bus) == again.pid
    new_progs, _, new_names = owned_programs(again)
    assert CGROUP_PROGRAMS <= new_names and not new_progs & progs
    assert summary(again, 60)["duration_sec"] == 60


# -- --check-config (no root needed) -------------------------------------------------------------

CONNECTIONS_KEYS = ("max_handshakes, max_processes, max_window_sec, poll_interval_ms, recent_records, record_events, "
                    "ring_buffer_kib, trace_udp_sends")
BAD_CONFIGS = [
    pytest.param("connections:\n  max_window_sec: 60\n  max_processes: 100: 5\n",
                 "malformed YAML: line 3, column 21: mapping values are not allowed here", id="malformed-yaml"),
    pytest.param("connections:\n  max_proceses: 100\n",
                 f"connections.max_proceses: unknown key (known keys here: {CONNECTIONS_KEYS})", id="unknown-key"),
    pytest.param('connections: {max_processes: "lots"}\n',
                 "connections.max_processes: expected an integer, got 'lots'", id="wrong-type"),
    pytest.param("connections:\n  max_window_sec: 7200\n",
                 "connections.max_window_sec: 7200 is out of range 1..3600", id="out-of-range"),
    pytest.param("connections:\n  ring_buffer_kib: 3000\n",
                 "connections.ring_buffer_kib: 3000 is not a power of two", id="not-power-of-two"),
    pytest.param("- log_level: info\n", "(top level): expected a mapping, got a list", id="not-a-mapping"),
]


def netwatchd_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("netwatchd"), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("content, problem", BAD_CONFIGS)
def test_check_config_rejects_with_one_line(tmp_path, content, problem):
    path = tmp_path / "netwatchd.yaml"
    path.write_text(content)
    r = netwatchd_cli("--check-config", str(path))
    assert r.returncode == 78
    assert r.stdout == ""
    assert r.stderr == f"netwatchd: {path}: {problem}\n"


def test_check_config_on_a_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    r = netwatchd_cli("--check-config", str(path))
    assert (r.returncode, r.stderr) == (78, f"netwatchd: {path}: cannot read: No such file or directory\n")


def test_check_config_accepts_the_shipped_file():
    r = netwatchd_cli("--check-config", str(SHIPPED_CONFIG))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"{SHIPPED_CONFIG}: configuration is valid\n"


def test_starting_with_a_broken_config_exits_78_before_loading_anything(tmp_path):
    path = tmp_path / "netwatchd.yaml"
    path.write_text('connections: {max_processes: "lots"}\n')
    r = netwatchd_cli("--config", str(path))
    assert r.returncode == 78
    assert r.stderr == f"netwatchd: {path}: connections.max_processes: expected an integer, got 'lots'\n"
