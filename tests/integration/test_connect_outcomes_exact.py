"""Connect outcomes against the real kernel and a real daemon: every connect() counted once,
under the outcome its own caller saw, per process and per command, through D-Bus Summary.

The oracle is each child's ledger: it classifies every connect by what connect() returned and,
for a connect still in progress at return, by SO_ERROR once poll() says the handshake ended
(0 succeeded, ECONNREFUSED refused, ETIMEDOUT timed_out, any other error or a close while
still pending other_failed). Children are copies of the interpreter named nwo<hex>, so their
command (the kernel's comm) is unique on the host.

Destinations: 127.0.0.1 (a listener, a bound port that never listens, a UDP sink) and a
DelayedPeer's namespace 20 ms away (a listener; a port whose SYNs are dropped). Nothing else.

test_connections_max_handshakes_64_overflow_counts_unknown_at_once is about
connections.max_handshakes: it sets the minimum, 64, to overflow the kernel's handshake map
with 100 pending connects (the shipped 16384 would need as many sockets). The daemons are also
about connections.recent_records (ListConnections is checked; see the `daemon` fixture).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.conftest import require_root_and_bcc, require_tools, requires
from tests.support.daemon import DaemonProcess, PrivateSystemBus, fd_infos, unvariant
from tests.support.processes import StartedUntilExit
from tests.integration.delay_relay import DelayedPeer
from tests.support.lan import sh
from tests.support.processes import named_python

pytestmark = pytest.mark.root

RECENT_RECORDS = 200_000  # as tests/integration/test_dbus_api.py, for the same reason
WINDOW = 3600  # Summary's whole window (connections.max_window_sec as shipped)
OUTCOMES = ("succeeded", "refused", "timed_out", "other_failed")
COUNT_FIELDS = ("total_attempts", "succeeded", "failed", "refused", "timed_out", "other_failed", "in_progress",
                "unknown", "udp_sends", "latency_samples")

# The child: one JSON request per stdin line, one JSON answer per stdout line.
CHILD = r'''
import ctypes, errno, json, os, select, socket, struct, sys, threading, time

LINGER0 = struct.pack("ii", 1, 0)  # close = RST: no TIME_WAIT, so 50k connects never run out of ports
OUTCOMES = ("succeeded", "refused", "timed_out", "other_failed")


class Ledger:
    """Connects by the outcome this process saw, and the errors behind them."""

    def __init__(self):
        self.n = dict.fromkeys(OUTCOMES, 0)
        self.why = {}
        self.tcp_established = 0  # succeeded with a TCP handshake (not UDP): latency samples
        self.lock = threading.Lock()

    def add(self, err, why=None):
        outcome = {0: "succeeded", errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timed_out"}.get(err, "other_failed")
        why = why or (errno.errorcode.get(err, str(err)) if err else "ok")
        with self.lock:
            self.n[outcome] += 1
            self.why[why] = self.why.get(why, 0) + 1

    def answer(self):
        return {"ledger": self.n, "why": self.why, "tcp_established": self.tcp_established}


def tcp(nonblocking=False, syncnt=0, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    if syncnt:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, syncnt)
    s.setblocking(not nonblocking)
    return s


def ended(s, timeout):
    """SO_ERROR once the handshake has ended (poll says writable or error); None while pending."""
    p = select.poll()
    p.register(s, select.POLLOUT)
    if not p.poll(int(timeout * 1000)):
        return None
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def settle(ledger, s, rc, timeout=30, stats=None):
    """Books one TCP connect from its return code and, if in progress, how it ended (SO_ERROR
    is read once: reading it clears it)."""
    if rc == errno.EINPROGRESS:
        err = ended(s, 0)
        if stats is not None:
            stats["in_progress_at_return"] += 1
            stats["pending_after_return"] += err is None
        if err is None and timeout:
            err = ended(s, timeout)
        if err is None:
            s.close()
            ledger.add(-1, "closed while pending")
            return
        rc = err
    ledger.add(rc)
    if rc == 0:
        with ledger.lock:
            ledger.tcp_established += 1


def flood(ledger, plan, stats):
    """Loopback connects in a fixed pattern; all end before connect() returns, or nearly."""
    ok, closed, udp = (("127.0.0.1", plan[k]) for k in ("ok_port", "closed_port", "udp_port"))
    pattern = plan["pattern"]
    for i in range(plan["n"]):
        kind = pattern[i % len(pattern)]
        if kind == "udp":
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            ledger.add(u.connect_ex(udp))  # nothing is sent: returns 0
            u.close()
            continue
        s = tcp(nonblocking=kind.startswith("nb_"))
        settle(ledger, s, s.connect_ex(ok if kind.endswith("ok") else closed), stats=stats)
        s.close()


def slow(ledger, plan, stats):
    """Connects to the namespace, all at once, that end after connect() returned: a listener
    20 ms away (succeeded), a dropped port with TCP_SYNCNT=1 (timed out after ~3 s), a dropped
    port closed after close_after s (other_failed)."""
    peer, listener, dropped = plan["peer"], plan["listener"], plan["dropped"]
    socks, poller = {}, select.poll()

    def start(kind, port, syncnt=0):
        s = tcp(nonblocking=True, syncnt=syncnt)
        rc = s.connect_ex((peer, port))
        if rc != errno.EINPROGRESS:
            stats["slow_not_in_progress"] += 1
            settle(ledger, s, rc)
            s.close()
            return
        socks[s.fileno()] = (s, kind)
        poller.register(s, select.POLLOUT)

    for _ in range(plan["timed_out"]):
        start("timed_out", dropped, syncnt=1)
    for _ in range(plan["abandoned"]):
        start("abandoned", dropped)
    for _ in range(plan["delayed"]):
        start("delayed", listener)
    close_at = time.monotonic() + plan["close_after"]
    deadline = time.monotonic() + 60
    while socks and time.monotonic() < deadline:
        for fd, _ in poller.poll(20):
            s, kind = socks.pop(fd)
            poller.unregister(fd)
            settle(ledger, s, s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            s.close()
        if time.monotonic() >= close_at:
            close_at = float("inf")
            for fd in [fd for fd, (_, kind) in socks.items() if kind == "abandoned"]:
                s, _ = socks.pop(fd)
                poller.unregister(fd)
                settle(ledger, s, errno.EINPROGRESS, timeout=0)  # still pending: closed -> other_failed
    for fd, (s, _) in list(socks.items()):
        settle(ledger, s, errno.EINPROGRESS, timeout=0)


def mix(plan):
    os.nice(plan["nice"])
    ledger = Ledger()
    stats = dict.fromkeys(("in_progress_at_return", "pending_after_return", "slow_not_in_progress"), 0)
    start = time.monotonic()
    t = threading.Thread(target=slow, args=(ledger, plan, stats))
    t.start()
    flood(ledger, plan, stats)
    flood_sec = time.monotonic() - start
    t.join()
    return dict(ledger.answer(), stats=stats, flood_sec=flood_sec, total_sec=time.monotonic() - start)


held = []


def pend(n, peer, port):
    """n non-blocking connects to a port whose SYNs are dropped, all still pending."""
    for _ in range(n):
        s = tcp(nonblocking=True)
        rc = s.connect_ex((peer, port))
        if rc != errno.EINPROGRESS or ended(s, 0) is not None:
            raise SystemExit(f"connect to a dropped port did not stay pending: {rc}")
        held.append(s)
    return {"pending": len(held)}


def close_held():
    ledger = Ledger()
    while held:
        settle(ledger, held.pop(), errno.EINPROGRESS, timeout=0)
    return ledger.answer()


def families(port):
    """connect() with a destination of a family the socket cannot reach; nothing is sent."""
    libc = ctypes.CDLL(None, use_errno=True)
    sin6 = (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0)
            + socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("=I", 0))
    out = []
    for typ in (socket.SOCK_STREAM, socket.SOCK_DGRAM):  # an AF_INET socket, a sockaddr_in6
        s = socket.socket(socket.AF_INET, typ)
        rc = libc.connect(s.fileno(), sin6, len(sin6))
        out.append({"call": f"inet {typ.name} to sockaddr_in6", "return_code": -ctypes.get_errno() if rc else 0})
        s.close()
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)  # IPv6 only, an IPv4-mapped address
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    out.append({"call": "v6only to ::ffff:127.0.0.1", "return_code": -s.connect_ex(("::ffff:127.0.0.1", port))})
    s.close()
    return {"calls": out}


def rst(n, peer, port):
    """n blocking and n non-blocking connects to a listener that resets each connection it
    accepts; then waits for every reset."""
    ledger, socks = Ledger(), []
    for nonblocking in (False, True):
        for _ in range(n):
            s = tcp(nonblocking=nonblocking)
            settle(ledger, s, s.connect_ex((peer, port)))
            socks.append(s)
    resets = 0
    for s in socks:
        s.setblocking(True)
        s.settimeout(10)
        try:
            s.recv(1)
        except ConnectionResetError:
            resets += 1
        s.close()
    return dict(ledger.answer(), resets=resets)


def self_connect(n):
    """n non-blocking connects of a socket to its own address: a simultaneous open (its SYN
    arrives at itself: SYN_SENT -> SYN_RECV -> ESTABLISHED), which succeeds."""
    ledger = Ledger()
    for _ in range(n):
        s = tcp(nonblocking=True)
        s.bind(("127.0.0.1", 0))
        settle(ledger, s, s.connect_ex(s.getsockname()))
        s.close()
    return ledger.answer()


for line in sys.stdin:
    req = json.loads(line)
    verb = req.pop("verb")
    if verb == "exit":  # held sockets still open: the kernel closes them as the process exits
        os._exit(0)
    answer = {"mix": mix, "pend": pend, "close": close_held, "families": families, "rst": rst,
              "self_connect": self_connect}[verb](**req)
    print(json.dumps(answer), flush=True)
'''

# Accepts and closes, as fast as it can, on a listening socket it inherits (fd argv[1]).
ACCEPTOR = r'''
import os, socket, sys
os.nice(int(sys.argv[2]))
srv = socket.socket(fileno=int(sys.argv[1]))
while True:
    srv.accept()[0].close()
'''


class OutcomeChild(StartedUntilExit):
    """The CHILD script run from a copy of the interpreter named nwo<hex>; stopped by its pid."""

    def __init__(self, prefix: Optional[List[str]] = None) -> None:
        """prefix: commands that exec it (ip netns exec, taskset), so its pid stays the child's."""
        self.command = "nwo" + secrets.token_hex(5)  # 13 bytes: the kernel keeps up to 15
        self.prefix = list(prefix or [])
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-outcomes-"))
        self.proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "OutcomeChild":
        self.proc = subprocess.Popen([*self.prefix, str(named_python(self.dir, self.command)), "-c", CHILD],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self

    def send(self, verb: str, **args) -> None:
        self.proc.stdin.write(json.dumps(dict(args, verb=verb)) + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float = 60) -> Dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            raise AssertionError(f"{self.command} gave no answer within {timeout} s (exit {self.proc.wait()}): "
                                 f"{self.proc.stderr.read()}")
        return json.loads(line)

    def ask(self, verb: str, timeout: float = 60, **args) -> Dict:
        self.send(verb, **args)
        return self.answer(timeout)

    def exit_now(self) -> None:
        """Exits with its held sockets open; reaped here, so its pid is gone afterwards."""
        self.send("exit")
        assert self.proc.wait(10) == 0, self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)



class Loopback:
    """On 127.0.0.1: a listener with acceptor processes, a bound port that never listens, and
    a bound UDP socket (nothing is sent to it: UDP connect() only sets the peer)."""

    def __init__(self, acceptors: int = 2, nice: int = 0) -> None:
        route = sh("ip", "route", "get", "127.0.0.1").stdout
        assert " dev lo " in route, f"127.0.0.1 is not routed to lo: {route}"
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.closed = socket.socket()
        self.closed.bind(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.acceptors: List[subprocess.Popen] = []
        try:
            fd = self.listener.fileno()
            for _ in range(acceptors):
                self.acceptors.append(subprocess.Popen([sys.executable, "-c", ACCEPTOR, str(fd), str(nice)],
                                                       pass_fds=[fd]))
        except BaseException:
            self.close()
            raise

    def ports(self) -> Dict[str, int]:
        return {"ok_port": self.listener.getsockname()[1], "closed_port": self.closed.getsockname()[1],
                "udp_port": self.udp.getsockname()[1]}

    def close(self) -> None:
        for p in self.acceptors:
            if p.poll() is None:
                p.kill()
            p.wait()
        for s in (self.listener, self.closed, self.udp):
            s.close()


# -- fixtures ------------------------------------------------------------------------------------

def _prerequisites() -> None:
    require_root_and_bcc()
    require_tools("dbus-daemon", "busctl", "ip", "nft")
    requires(Path("/dev/net/tun").exists(), "needs /dev/net/tun (DelayedPeer)")


@pytest.fixture(scope="module")
def daemon(make_daemon):
    """netwatchd on the shipped config, on a private bus; also about ListConnections, so about
    connections.recent_records: the daemon traces the whole host, whose other load (tests and
    benchmarks of other work) would push a test's few records out of the shipped 10000 before
    it asks for them. Counts do not depend on it."""
    _prerequisites()
    return make_daemon({"connections": {"recent_records": RECENT_RECORDS}}, about=("connections.recent_records",))


@pytest.fixture(scope="module")
def peer():
    """A namespace 20 ms away: .listener accepts and closes, .rst_listener resets, SYNs to
    .dropped (where nothing listens) are dropped."""
    _prerequisites()
    with DelayedPeer(delay_ms=20) as p:
        p.listener = p.listen(mode="close").port
        p.rst_listener = p.listen(mode="rst").port
        p.dropped = 7
        p.drop_syns(p.dropped)
        p.check_route()
        yield p


# -- asking the daemon ---------------------------------------------------------------------------

def summary(d: DaemonProcess, pid: int = 0, command: str = "") -> Dict:
    (answer,) = d.call("Summary", "usu", pid, command, WINDOW)
    return unvariant(answer)


def list_connections(d: DaemonProcess, pid: int, limit: int = 1000) -> List[Dict]:
    records, _ = d.call("ListConnections", "uu", pid, limit)
    return [unvariant(r) for r in records]


def records_of(d: DaemonProcess, pid: int, n: int) -> List[Dict]:
    """The pid's n records in ListConnections, newest first."""
    records = list_connections(d, pid)
    if len(records) != n:
        newest = list_connections(d, 0)
        by_command: Dict[str, int] = {}
        for r in newest:
            by_command[r["command"]] = by_command.get(r["command"], 0) + 1
        raise AssertionError(f"pid {pid}: {len(records)} records, want {n}; EventsLost "
                             f"{d.get_property('EventsLost')}; newest {len(newest)} by command {by_command}")
    return records


def expected(ledger: Dict[str, int], in_progress: int = 0, unknown: int = 0) -> Dict[str, int]:
    failed = ledger["refused"] + ledger["timed_out"] + ledger["other_failed"]
    return dict(ledger, failed=failed, in_progress=in_progress, unknown=unknown,
                total_attempts=ledger["succeeded"] + failed + unknown + in_progress)


def wait_summary(d: DaemonProcess, want: Dict[str, int], pid: int = 0, command: str = "",
                 timeout: float = 20) -> Dict:
    """Summary once it shows `want` (every field of it); fails with the last answer otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        s = summary(d, pid, command)
        got = {k: s[k] for k in want}
        if got == want:
            return s
        if time.monotonic() > deadline:
            diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
            raise AssertionError(f"Summary(pid={pid}, command={command!r}) after {timeout} s: "
                                 f"(got, want) {diff}; {s['message']}")
        time.sleep(0.1)


# -- 1. ≥ 200k connects, mixed outcomes, four processes ------------------------------------------

WORKERS = 4
PER_WORKER = 50_000  # loopback connects each, in this pattern (repeating):
PATTERN = ["ok"] * 9 + ["refused"] * 5 + ["nb_ok"] * 5 + ["nb_refused"] * 3 + ["udp"] * 3
SLOW = {"timed_out": 300, "abandoned": 150, "delayed": 100, "close_after": 0.2}  # each, at once
# The load runs at nice 10: the daemon (a system service at nice 0) is not starved by the
# senders it watches, and neither is the rest of the host.
NICE = 10


def test_200k_mixed_connects_from_four_processes_are_counted_exactly(daemon, peer):
    """4 processes make 50k loopback connects each (blocking and non-blocking, accepted and
    refused, UDP connects) while 550 more each end after connect() returned (20 ms away:
    succeeded; SYNs dropped: timed out with TCP_SYNCNT=1, or closed after 0.2 s). Summary by
    pid and by command equals each process's own ledger in every field. Counts never depend on
    records; the latency samples do, so any short of one per established TCP handshake must be
    among the records the daemon counted lost (EventsLost)."""
    lost_before = daemon.get_property("EventsLost")
    loop = Loopback(nice=NICE)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(loop.close)
        workers = [stack.enter_context(OutcomeChild()) for _ in range(WORKERS)]
        plan = dict(loop.ports(), n=PER_WORKER, pattern=PATTERN, peer=peer.address, listener=peer.listener,
                    dropped=peer.dropped, nice=NICE, **SLOW)
        for w in workers:
            w.send("mix", plan=plan)
        results = [w.answer(timeout=240) for w in workers]
        connects_sec = time.monotonic() - started

        cycles, rest = divmod(PER_WORKER, len(PATTERN))
        planned_kinds = {k: PATTERN.count(k) * cycles + PATTERN[:rest].count(k) for k in set(PATTERN)}
        planned = {  # what the destinations must have produced; the ledgers say what they did
            "succeeded": planned_kinds["ok"] + planned_kinds["nb_ok"] + planned_kinds["udp"] + SLOW["delayed"],
            "refused": planned_kinds["refused"] + planned_kinds["nb_refused"],
            "timed_out": SLOW["timed_out"],
            "other_failed": SLOW["abandoned"],
        }
        for w, r in zip(workers, results):
            print(f"\n{w.command} pid {w.pid}: {r['ledger']} {r['why']} {r['stats']} "
                  f"flood {r['flood_sec']:.1f} s, all {r['total_sec']:.1f} s")
            assert r["ledger"] == planned, r

        samples_short = 0
        for w, r in zip(workers, results):
            want = dict(expected(r["ledger"]), udp_sends=0)
            s = wait_summary(daemon, want, pid=w.pid)
            assert s["commands"] == [w.command]
            by_command = summary(daemon, command=w.command)
            assert {k: by_command[k] for k in COUNT_FIELDS} == {k: s[k] for k in COUNT_FIELDS}, by_command["message"]
            # one latency sample per established TCP handshake (UDP connects have none)
            assert s["latency_samples"] <= r["tcp_established"], s
            samples_short += r["tcp_established"] - s["latency_samples"]
        lost = daemon.get_property("EventsLost") - lost_before
        assert samples_short <= lost, f"{samples_short} latency samples missing, {lost} records lost"
        assert daemon.get_property("ProcessesUntracked") == 0
        assert daemon.get_property("HandshakesUntracked") == 0
        total = sum(sum(r["ledger"].values()) for r in results)
        assert total >= 200_000
    print(f"{total} connects in {connects_sec:.1f} s ({total / connects_sec:.0f}/s), checked after "
          f"{time.monotonic() - started:.1f} s; records lost {lost}, latency samples missing {samples_short}")


# -- 2. in_progress while pending ----------------------------------------------------------------

def test_pending_connects_are_in_progress_until_closed(daemon, peer):
    """50 non-blocking connects to a port whose SYNs are dropped: in_progress 50 while they are
    pending (total_attempts 50, nothing else); closed, they are other_failed."""
    with OutcomeChild() as child:
        assert child.ask("pend", n=50, peer=peer.address, port=peer.dropped) == {"pending": 50}
        pending = dict.fromkeys(OUTCOMES, 0)
        for who in ({"pid": child.pid}, {"command": child.command}):
            s = wait_summary(daemon, expected(pending, in_progress=50), **who)
            assert s["latency_samples"] == 0
        closed = child.ask("close")
        assert closed["ledger"] == dict(pending, other_failed=50)
        for who in ({"pid": child.pid}, {"command": child.command}):
            wait_summary(daemon, expected(closed["ledger"]), **who)
        records = records_of(daemon, child.pid, 50)
        assert {(r["outcome"], r["return_code"], r["end_error"]) for r in records} == {
            ("other_failed", -errno.EINPROGRESS, "")}


# -- 4. a process that exits mid-handshake -------------------------------------------------------

def test_connects_pending_when_their_process_exits_are_other_failed_under_its_pid(daemon, peer):
    """A process makes 3 connects that fail at once (a family its sockets cannot reach), then 30
    that stay pending (SYNs dropped), and exits: the kernel closes the 30 as it exits. Its
    counters idle and its pid gone (reaped), only its pending handshakes keep the daemon from
    freeing those counters before the 30 ends are read. Summary by its pid, answered from
    history after it is gone, has all 33 as other_failed; none lost (HandshakesUntracked 0)."""
    none = dict.fromkeys(OUTCOMES, 0)
    with OutcomeChild() as child:
        pid, command = child.pid, child.command
        assert len(child.ask("families", port=9)["calls"]) == 3  # nothing is sent
        assert child.ask("pend", n=30, peer=peer.address, port=peer.dropped) == {"pending": 30}
        wait_summary(daemon, expected(dict(none, other_failed=3), in_progress=30), pid=pid)
        child.exit_now()
    assert not os.path.exists(f"/proc/{pid}")
    want = expected(dict(none, other_failed=33))
    wait_summary(daemon, want, pid=pid)
    wait_summary(daemon, want, command=command)
    assert daemon.get_property("HandshakesUntracked") == 0


# -- 5. a destination of a family the socket cannot reach ----------------------------------------

def test_connect_to_a_family_the_socket_cannot_reach_is_other_failed(daemon):
    """An AF_INET TCP and an AF_INET UDP socket given a sockaddr_in6 (EAFNOSUPPORT), an IPv6-only
    socket given an IPv4-mapped address (ENETUNREACH): other_failed, with what connect()
    returned in ListConnections."""
    closed = socket.socket(socket.AF_INET6)
    closed.bind(("::1", 0))  # never listens; nothing is sent to it anyway
    try:
        with OutcomeChild() as child:
            calls = child.ask("families", port=closed.getsockname()[1])["calls"]
            assert [c["return_code"] for c in calls] == [-errno.EAFNOSUPPORT, -errno.EAFNOSUPPORT, -errno.ENETUNREACH]
            want = expected(dict(dict.fromkeys(OUTCOMES, 0), other_failed=3))
            wait_summary(daemon, want, pid=child.pid)
            wait_summary(daemon, want, command=child.command)
            records = records_of(daemon, child.pid, 3)
    finally:
        closed.close()
    assert [(r["outcome"], r["return_code"], r["error"]) for r in reversed(records)] == [
        ("other_failed", -errno.EAFNOSUPPORT, "EAFNOSUPPORT"),
        ("other_failed", -errno.EAFNOSUPPORT, "EAFNOSUPPORT"),
        ("other_failed", -errno.ENETUNREACH, "ENETUNREACH"),
    ]
    assert [r["transport"] for r in reversed(records)] == ["tcp", "udp", "tcp"]


# -- 6. RST after accept -------------------------------------------------------------------------

def test_a_connection_reset_after_accept_succeeded(daemon, peer):
    """3 blocking and 3 non-blocking connects to a listener 20 ms away that resets each
    connection once accepted: the handshakes succeeded (each saw its reset afterwards)."""
    with OutcomeChild() as child:
        r = child.ask("rst", n=3, peer=peer.address, port=peer.rst_listener)
        assert r["ledger"] == dict(dict.fromkeys(OUTCOMES, 0), succeeded=6) and r["resets"] == 6, r
        s = wait_summary(daemon, expected(r["ledger"]), pid=child.pid)
        assert s["latency_samples"] == 6
        records = records_of(daemon, child.pid, 6)
    for record, return_code in zip(reversed(records), [0] * 3 + [-errno.EINPROGRESS] * 3):
        assert (record["outcome"], record["return_code"], record["end_error"]) == ("succeeded", return_code, "")
        assert (record["destination"], record["port"]) == (peer.address, peer.rst_listener)
        assert record["latency_usec"] >= 20_000  # the SYN alone is held 20 ms


def test_a_self_connect_is_a_simultaneous_open_that_succeeded(daemon):
    """20 non-blocking connects of a socket to its own address (127.0.0.1): the SYN meets the
    socket that sent it, SYN_SENT -> SYN_RECV -> ESTABLISHED. Succeeded, each with a latency;
    SYN_RECV is half way, not a failure."""
    with OutcomeChild() as child:
        r = child.ask("self_connect", n=20)
        assert r["ledger"] == dict(dict.fromkeys(OUTCOMES, 0), succeeded=20), r
        s = wait_summary(daemon, expected(r["ledger"]), pid=child.pid)
        assert s["latency_samples"] == 20, s["message"]
        records = records_of(daemon, child.pid, 20)
    assert {(r["outcome"], r["return_code"], r["end_error"]) for r in records} == {
        ("succeeded", -errno.EINPROGRESS, "")}, records


# -- 3. the handshake map overflows --------------------------------------------------------------

def test_connections_max_handshakes_64_overflow_counts_unknown_at_once(peer):
    """About connections.max_handshakes, set to its minimum, 64: 100 connects pending at once to
    a dropped port. The first 64 are followed (in_progress, then other_failed once closed); the
    36 beyond the map are counted unknown at once (HandshakesUntracked 36). Never a wrong
    outcome. connections.recent_records as for the module's daemon (ListConnections is checked).
    Exact on a host where no other process keeps handshakes pending meanwhile (they would take
    slots of the 64: the daemon follows the whole host)."""
    _prerequisites()
    config = {"connections": {"max_handshakes": 64, "recent_records": RECENT_RECORDS}}
    with PrivateSystemBus() as bus, DaemonProcess(bus, config, about=("connections.max_handshakes",
                                                                      "connections.recent_records")) as d:
        assert d.get_property("HandshakesUntracked") == 0
        with OutcomeChild() as child:
            assert child.ask("pend", n=100, peer=peer.address, port=peer.dropped) == {"pending": 100}
            none = dict.fromkeys(OUTCOMES, 0)
            wait_summary(d, expected(none, in_progress=64, unknown=36), pid=child.pid)
            assert d.get_property("HandshakesUntracked") == 36
            oldest_first = [r["outcome"] for r in reversed(list_connections(d, child.pid))]
            assert oldest_first == ["in_progress"] * 64 + ["unknown"] * 36

            closed = child.ask("close")
            assert closed["ledger"] == dict(none, other_failed=100)  # what the process saw
            for who in ({"pid": child.pid}, {"command": child.command}):
                wait_summary(d, expected(dict(none, other_failed=64), unknown=36), **who)
            assert d.get_property("HandshakesUntracked") == 36
            oldest_first = [r["outcome"] for r in reversed(list_connections(d, child.pid))]
            assert oldest_first == ["other_failed"] * 64 + ["unknown"] * 36


# -- a handshake that ends on another CPU just before connect() returns --------------------------

def rst_mark_recursion_misses(pid: int) -> List[int]:
    """How often the kernel skipped each of the daemon's two RST mark programs (bpftool's
    recursion_misses)."""
    misses = []
    for _, info in fd_infos(pid):
        if info.get("link_type") == "raw_tracepoint" and info.get("tp_name") == "tcp_receive_reset":
            shown = json.loads(sh("bpftool", "prog", "show", "id", info["prog_id"], "--json").stdout)
            misses.append(int(shown.get("recursion_misses", 0)))
    assert len(misses) == 2, f"process {pid} holds {len(misses)} raw tracepoint links on tcp_receive_reset, not 2"
    return misses


def test_a_handshake_that_ends_on_another_cpu_before_connect_returns_keeps_its_outcome(daemon):
    """20000 non-blocking connects to a closed port on the loopback of a namespace made here,
    whose lo steers every packet to another CPU (RPS): the RST is handled on that CPU, at times
    after the connecting thread released the socket and before connect() returned, at times
    while the caller already polls. As on any host where a reply is handled on another CPU (RSS,
    RPS) that fast. All 20000 are refused, and nothing is unknown.

    History: before handshake ends were sock_ops callbacks, 10-15 were unknown; before the
    `ended` map and the RST mark, ~250. While the RST mark was a perf tracepoint, the kernel
    skipped it whenever the RST's softirq interrupted another tracing program on that CPU (420
    recursion misses in one run with connect floods on the RST's CPU), and a refusal whose
    error the caller had already read then counted other_failed (4-7 of 20000 under such load).
    The mark is a raw tracepoint now, which the kernel does not skip for that; a second client
    connects on the RST's CPU throughout, to load it that way. With that load a refusal was
    counted unknown twice in about 20 runs: the end and the returning connect() each wrote one
    map and missed the other's write (a store-load reorder); a fence sits between now. Once in CI
    a refusal counted other_failed: its RST, handled in a softirq that interrupted the mark of the
    second client's own RST (handled in process context, at release_sock), went unmarked, and
    its caller read sk_err before the close. Two mark programs now, each marking what interrupts
    the other."""
    cpus = sorted(os.sched_getaffinity(0))
    requires(len(cpus) >= 2, "needs 2 CPUs")
    namespace = "nwrps-" + secrets.token_hex(3)
    rps = Path("/sys/class/net/lo/queues/rx-0/rps_cpus")
    try:
        sh("ip", "netns", "add", namespace)
        sh("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        route = sh("ip", "netns", "exec", namespace, "ip", "route", "get", "127.0.0.1").stdout
        assert " dev lo " in route, route
        # ip netns exec mounts the namespace's own /sys: this is the namespace's lo, not the host's
        steer = sh("ip", "netns", "exec", namespace, "sh", "-c", f"test -e {rps} && echo {1 << cpus[1]:x} > {rps}",
                   check=False)
        requires(steer.returncode == 0, "needs RPS (CONFIG_RPS)")
        prefix = ["ip", "netns", "exec", namespace, "taskset", "-c", str(cpus[0])]
        # a second client on the RST's CPU: its connects run our tracing programs there, which
        # the RSTs' softirqs interrupt (what made the kernel skip the RST mark when it was a
        # perf tracepoint)
        on_rst_cpu = ["ip", "netns", "exec", namespace, "taskset", "-c", str(cpus[1])]
        with OutcomeChild(prefix) as child, OutcomeChild(on_rst_cpu) as second:
            plan = {"ok_port": 9, "closed_port": 9, "udp_port": 9, "n": 20000, "pattern": ["nb_refused"], "peer": "127.0.0.1",
                    "listener": 9, "dropped": 9, "nice": NICE, "timed_out": 0, "abandoned": 0, "delayed": 0,
                    "close_after": 0}
            second.send("mix", plan=plan)
            r = child.ask("mix", timeout=120, plan=plan)
            r2 = second.answer(timeout=120)
            for answer in (r, r2):
                assert answer["ledger"] == dict(dict.fromkeys(OUTCOMES, 0), refused=plan["n"]), answer
            print(f"\n{r['stats']}\n{r2['stats']}")
            # every end was counted before the child saw it: no need to wait long
            for who, answer in ((child, r), (second, r2)):
                wait_summary(daemon, expected(answer["ledger"]), pid=who.pid, timeout=3)
            assert daemon.get_property("HandshakesUntracked") == 0
            # informative: a raw tracepoint is skipped only when an RST's softirq interrupts the
            # mark of another RST on the same CPU (1 in 40000 here, where a perf tracepoint was
            # skipped hundreds of times); the other program marks that one
            print(f"RST mark programs skipped {rst_mark_recursion_misses(daemon.pid)} times")
    finally:
        sh("ip", "netns", "del", namespace, check=False)
