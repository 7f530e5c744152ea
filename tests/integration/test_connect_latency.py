"""Connect outcomes and latency against a listener 20 ms away (issue 12's acceptance, on the host).

The host kernel has neither netem nor fq, so the 20 ms are made by a user-space relay between two
TUN devices (tests/integration/delay_relay.py): every packet towards the peer's namespace is held
20 ms, so a TCP handshake takes 20 ms as the client sees it. The kernel matrix checks the same
with netem on Debian's own kernels. Expected values are literals: 20 ms +-10% (the issue's
tolerance), and the outcome each client itself observed (return code, then SO_ERROR).
The daemon runs the shipped config; only time is compressed.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import require_root_and_bcc, require_tools
from tests.support import wait_for
from tests.support.daemon import unvariant
from tests.integration.delay_relay import DelayedPeer

pytestmark = pytest.mark.root

DELAY_USEC = 20_000
LOW, HIGH = DELAY_USEC * 0.9, DELAY_USEC * 1.1
CONNECTS = 10

# A client of one style: N connects to (address, port), each closed at once; prints its pid first.
CLIENT = r"""
import asyncio, json, os, socket, sys, time
style, address, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print(json.dumps({"pid": os.getpid()}), flush=True)
took = []
async def nonblocking():
    for _ in range(n):
        t = time.perf_counter()
        reader, writer = await asyncio.open_connection(address, port)  # a non-blocking connect()
        took.append(time.perf_counter() - t)
        writer.close()
        await writer.wait_closed()
if style == "asyncio":
    asyncio.run(nonblocking())
else:
    for _ in range(n):
        s = socket.socket()
        t = time.perf_counter()
        s.connect((address, port))
        took.append(time.perf_counter() - t)
        s.close()
print(json.dumps({"took_usec": sorted(int(x * 1e6) for x in took)}), flush=True)
"""

# One connect of each outcome through the relay, as a client learns it: return code, then SO_ERROR.
OUTCOMES = r"""
import errno, json, os, select, socket, sys, time
address, ok_port, closed_port, dropped_port, rst_port = sys.argv[1], *map(int, sys.argv[2:6])
print(json.dumps({"pid": os.getpid()}), flush=True)
ledger = []
def connect(name, port, blocking=True, syn_count=None, announce=False):
    s = socket.socket()
    if syn_count:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, syn_count)  # give up after ~3 s, not 127
    s.setblocking(blocking)
    rc = s.connect_ex((address, port))
    final = rc
    if rc == errno.EINPROGRESS:
        if announce:
            print(json.dumps({"pending": name}), flush=True)
        select.select([], [s], [], 30)
        final = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    ledger.append({"name": name, "return_code": -rc, "final": errno.errorcode.get(final, "") if final else ""})
    if port == rst_port and final == 0:
        try:
            s.recv(1)  # wait for the listener's RST: the connection was made, then reset
        except ConnectionResetError:
            ledger[-1]["reset"] = True
    s.close()
connect("blocking ok", ok_port)
connect("nonblocking ok", ok_port, blocking=False)
connect("blocking refused", closed_port)
connect("nonblocking refused", closed_port, blocking=False)
connect("blocking timed out", dropped_port, syn_count=1)
connect("nonblocking timed out", dropped_port, blocking=False, syn_count=1, announce=True)
connect("rst after accept", rst_port)
print(json.dumps({"ledger": ledger}), flush=True)
"""


@pytest.fixture(scope="module")
def world(make_daemon):
    require_root_and_bcc()
    require_tools("curl", "nft")
    with DelayedPeer(delay_ms=DELAY_USEC / 1000) as peer:
        peer.check_route()  # all traffic below goes into the peer's own namespace
        daemon = make_daemon({"tick_interval_sec": 0.5})
        try:
            yield daemon, peer
        finally:
            daemon.stop()  # before the peer goes: it traces the peer's last connections


def summary(daemon, pid: int = 0, command: str = "") -> dict:
    (answer,) = daemon.call("Summary", "usu", pid, command, 600)
    return unvariant(answer)


def records_of(daemon, pid: int) -> list:
    records, _ = daemon.call("ListConnections", "uu", pid, 1000)
    return [unvariant(r) for r in records]


def run_client(style: str, address: str, port: int, n: int) -> tuple:
    out = subprocess.run([sys.executable, "-c", CLIENT, style, address, str(port), str(n)], capture_output=True,
                         text=True, timeout=60, check=True).stdout.splitlines()
    return json.loads(out[0])["pid"], json.loads(out[1])["took_usec"]


@pytest.mark.parametrize("style", ["blocking", "asyncio"])
def test_p50_latency_of_a_listener_20ms_away(world, style):
    daemon, peer = world
    listener = peer.listen(mode="keep")
    pid, took = run_client(style, peer.address, listener.port, CONNECTS)
    # the set-up itself: every connect went through the relay. Its upper side is not the client's
    # stopwatch, which also holds the client's own wake-up on a loaded machine, but the relay's
    # lateness (it runs at real-time priority) and the daemon's p50 below
    assert took[0] >= LOW, f"a connect faster than the relay's 20 ms: {took}"
    s = wait_for(timeout=15, what="every handshake's latency", condition=lambda: (lambda a: a if a["latency_samples"] == CONNECTS else None)(
        summary(daemon, pid)))
    assert (s["succeeded"], s["failed"], s["in_progress"], s["total_attempts"]) == (CONNECTS, 0, 0, CONNECTS)
    assert LOW <= s["latency_p50_usec"] <= HIGH, (s["message"], took, peer.relay_counters())
    for r in records_of(daemon, pid):
        # each one: never faster than the delay, never slower than the client itself saw it (a busy
        # machine may hold a single packet a few ms; the median above stays within 10%)
        assert r["outcome"] == "succeeded" and LOW <= r["latency_usec"] <= max(HIGH, took[-1]), (r, took)
        assert r["return_code"] == (-115 if style == "asyncio" else 0), r  # asyncio's connect is non-blocking


def test_curl_latency_and_outcome(world):
    daemon, peer = world
    listener = peer.listen(mode="close")
    pids = []
    for _ in range(5):
        curl = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "--max-time", "5",
                                 f"http://{peer.address}:{listener.port}/"])
        pids.append(curl.pid)
        curl.wait(timeout=10)  # exit 52: the listener closes without a reply; the connect succeeded
    latencies = []
    for pid in pids:
        s = wait_for(timeout=15, what="curl's handshake", condition=lambda: (lambda a: a if a["latency_samples"] == 1 else None)(
            summary(daemon, pid)))
        records = records_of(daemon, pid)
        # curl's resolver also tries nscd's unix socket (absent here): those are its other connects
        others = [r for r in records if r["family"] == "unix"]
        assert all(r["outcome"] == "other_failed" for r in others), others
        assert (s["succeeded"], s["failed"], s["in_progress"]) == (1, len(others), 0), s["message"]
        [record] = [r for r in records if r["transport"] == "tcp"]
        assert (record["command"], record["return_code"], record["outcome"]) == ("curl", -115, "succeeded")
        assert record["latency_usec"] == s["latency_p50_usec"] or abs(
            record["latency_usec"] - s["latency_p50_usec"]) <= record["latency_usec"] / 32, (record, s)  # 1 sample
        assert record["latency_usec"] >= LOW, record
        latencies.append(record["latency_usec"])
    assert LOW <= sorted(latencies)[len(latencies) // 2] <= HIGH, latencies  # p50 of the five curls


def test_each_outcome_as_the_client_saw_it(world):
    daemon, peer = world
    ok = peer.listen(mode="keep")
    rst = peer.listen(mode="rst")
    dropped = peer.listen(mode="keep")
    peer.drop_syns(dropped.port)
    closed_port = ok.port + 1 if ok.port + 1 not in (rst.port, dropped.port) else ok.port + 2
    child = subprocess.Popen([sys.executable, "-c", OUTCOMES, peer.address, str(ok.port), str(closed_port),
                              str(dropped.port), str(rst.port)], stdout=subprocess.PIPE, text=True)
    try:
        pid = json.loads(child.stdout.readline())["pid"]
        assert json.loads(child.stdout.readline()) == {"pending": "nonblocking timed out"}
        # the SYN goes unanswered for ~3 s: meanwhile Summary shows it in progress
        s = wait_for(timeout=15, what="the pending handshake", condition=lambda: (lambda a: a if a["in_progress"] == 1 else None)(
            summary(daemon, pid)))
        assert (s["succeeded"], s["refused"], s["timed_out"], s["in_progress"]) == (2, 2, 1, 1), s["message"]
        ledger = json.loads(child.stdout.readline())["ledger"]
    finally:
        child.kill()
        child.wait()
    finals = [e["final"] for e in ledger]
    assert finals == ["", "", "ECONNREFUSED", "ECONNREFUSED", "ETIMEDOUT", "ETIMEDOUT", ""], ledger
    assert ledger[-1].get("reset"), ledger
    s = wait_for(timeout=15, what="the timed-out handshake", condition=lambda: (lambda a: a if a["timed_out"] == 2 else None)(
        summary(daemon, pid)))
    assert (s["total_attempts"], s["succeeded"], s["refused"], s["timed_out"], s["other_failed"], s["in_progress"],
            s["unknown"]) == (7, 3, 2, 2, 0, 0, 0), s["message"]  # an RST after accept is no connect failure
    records = list(reversed(records_of(daemon, pid)))  # oldest first, as the ledger
    assert [(r["return_code"], r["outcome"], r["end_error"]) for r in records] == [
        (0, "succeeded", ""), (-115, "succeeded", ""), (-111, "refused", "ECONNREFUSED"),
        (-115, "refused", "ECONNREFUSED"), (-110, "timed_out", "ETIMEDOUT"), (-115, "timed_out", "ETIMEDOUT"),
        (0, "succeeded", "")]
    for r in records[:4]:  # an answer, yes or no, comes back after the 20 ms
        assert LOW <= r["latency_usec"] <= HIGH + 5_000, r
    assert 2_500_000 <= records[5]["latency_usec"] <= 4_500_000, records[5]  # SYN + 1 retry: 1 s + 2 s
