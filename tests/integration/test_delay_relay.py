"""The delay fixture itself (delay_relay.DelayedPeer): the route guard, the delay a client sees,
nothing lost or reordered, SYNs dropped by nft, RST after accept, and nothing left behind.

Expected values are literals from the fixture's contract: a connect to a peer `delay_ms` away
takes delay_ms (20 ms here; never less, since the relay holds every packet that long), a lost
SYN or SYN-ACK would cost the kernel's 1 s initial retransmission timeout.
"""
from __future__ import annotations

import errno
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tools, requires
from tests.integration.delay_relay import DelayedPeer, RouteError
from tests.support.lan import sh

# Runs in the namespace: counts numbered UDP datagrams and reports whether they came in order.
UDP_SEQUENCE_RECEIVER = r"""
import socket, struct, sys
count = int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (not in Python's socket): drop nothing
s.bind((sys.argv[1], 0))
s.settimeout(5)
print("ready", s.getsockname()[1], flush=True)
seen = []
try:
    while len(seen) < count:
        seen.append(struct.unpack("!I", s.recv(64)[:4])[0])
except socket.timeout:
    pass
print(len(seen), seen == sorted(seen), flush=True)
"""


def _prerequisites() -> None:
    requires(os.geteuid() == 0, "needs root (TUN devices, namespaces)")
    requires(Path("/dev/net/tun").exists(), "needs /dev/net/tun")
    require_tools("ip", "nft")


@pytest.fixture(scope="module")
def peer():
    _prerequisites()
    with DelayedPeer(delay_ms=20) as p:
        yield p


def connect_ms(address: str, port: int, n: int) -> list:
    """Durations of n blocking connects, in ms."""
    times = []
    for _ in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            start = time.perf_counter()
            s.connect((address, port))
            times.append((time.perf_counter() - start) * 1000)
    return times


def test_route_guard(peer):
    assert peer.route_ok()
    peer.check_route()
    assert f"dev {peer.host_device} " in sh("ip", "route", "get", peer.address).stdout
    # A more specific route elsewhere (a blackhole: still no traffic anywhere) must be refused.
    sh("ip", "route", "add", "blackhole", f"{peer.address}/32")
    try:
        assert not peer.route_ok()
        with pytest.raises(RouteError, match=peer.host_device):
            peer.check_route()
    finally:
        sh("ip", "route", "del", "blackhole", f"{peer.address}/32")
    assert peer.route_ok()


def test_connect_takes_the_delay(peer):
    listener = peer.listen(mode="close")
    times = connect_ms(peer.address, listener.port, 21)
    print(f"\n20 ms peer: median {statistics.median(times):.3f} ms, min {min(times):.3f}, max {max(times):.3f}")
    assert 18 <= statistics.median(times) <= 22
    assert min(times) >= 20  # the SYN alone is held 20 ms

    with DelayedPeer(delay_ms=0) as near:
        listener = near.listen(mode="close")
        times = connect_ms(near.address, listener.port, 21)
    print(f"0 ms peer: median {statistics.median(times):.3f} ms, max {max(times):.3f}")
    assert statistics.median(times) < 5


def test_200_connects_nothing_lost(peer):
    listener = peer.listen(mode="close")
    dropped = Path(f"/sys/class/net/{peer.host_device}/statistics/tx_dropped")
    dropped_before = int(dropped.read_text())
    durations = []
    for _batch in range(4):  # 50 SYNs at once through the relay, 4 times
        pending = {}
        poller = select.poll()
        for _ in range(50):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            assert s.connect_ex((peer.address, listener.port)) == errno.EINPROGRESS
            pending[s.fileno()] = (s, time.perf_counter())
            poller.register(s, select.POLLOUT)
        deadline = time.perf_counter() + 5
        while pending and time.perf_counter() < deadline:
            for fd, _ in poller.poll(100):
                s, start = pending.pop(fd)
                poller.unregister(fd)
                assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                durations.append((time.perf_counter() - start) * 1000)
                s.close()
        for s, _ in pending.values():
            s.close()
    print(f"\n200 connects: median {statistics.median(durations):.3f} ms, max {max(durations):.3f}")
    assert len(durations) == 200
    # No retransmission anywhere: every handshake well inside the 1 s initial RTO.
    assert max(durations) < 500
    assert int(dropped.read_text()) == dropped_before
    rx_dropped = peer.run("cat", f"/sys/class/net/{peer.ns_device}/statistics/rx_dropped").stdout
    assert int(rx_dropped) == 0
    assert peer.relay_counters().errors == 0


def test_delayed_direction_keeps_order(peer):
    count = 1000
    receiver = peer.start_process(sys.executable, "-c", UDP_SEQUENCE_RECEIVER, peer.address, str(count),
                                  ready="ready")
    port = int(receiver.ready_line.split()[1])
    before = peer.relay_counters()
    dropped = Path(f"/sys/class/net/{peer.host_device}/statistics/tx_dropped")
    dropped_before = int(dropped.read_text())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(i.to_bytes(4, "big") + bytes(28), (peer.address, port))
            if i % 100 == 99:  # the host TUN's queue holds 500: let the relay drain it
                time.sleep(0.002)
    out, _ = receiver.communicate(timeout=10)
    assert int(dropped.read_text()) == dropped_before, "the host TUN's queue overflowed: pace the sender"
    assert out.split() == [str(count), "True"]
    after = peer.relay_counters()
    assert after.a2b_in - before.a2b_in >= count and after.errors == 0
    print(f"\nrelay: worst lateness {after.late_max_us} us, {after.late_over_1ms} writes over 1 ms late")


def test_drop_syns_keeps_connect_pending(peer):
    listener = peer.listen(mode="keep")
    peer.drop_syns(listener.port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        assert s.connect_ex((peer.address, listener.port)) == errno.EINPROGRESS
        poller = select.poll()
        poller.register(s, select.POLLOUT)
        start = time.perf_counter()
        assert poller.poll(1000) == []
        assert time.perf_counter() - start >= 1.0
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # still pending, no RST
    assert peer.syn_drops(listener.port) >= 1
    peer.clear_drops()
    assert connect_ms(peer.address, listener.port, 1)[0] < 500


def test_rst_listener_resets(peer):
    listener = peer.listen(mode="rst")
    with socket.create_connection((peer.address, listener.port), timeout=5) as s:
        with pytest.raises(ConnectionResetError):
            s.recv(1)


def test_cleanup_leaves_nothing():
    _prerequisites()
    p = DelayedPeer(delay_ms=20).start()
    try:
        listener = p.listen()
        pids = [p.relay.pid, listener.proc.pid]
        assert set(p.leftovers()) == {p.host_device, p.namespace, *(f"pid {pid}" for pid in pids)}
    finally:
        p.cleanup()
    assert p.leftovers() == []
    assert p.namespace not in sh("ip", "netns", "list").stdout
    links = sh("ip", "-o", "link", "show").stdout
    assert p.host_device not in links and p.ns_device not in links
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


# Runs as a stand-in test process that is SIGKILLed without any clean-up of its own.
KILLED_OWNER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.integration.delay_relay import DelayedPeer
p = DelayedPeer(delay_ms=20).start()
listener = p.listen()
print(p.namespace, p.host_device, p.relay.pid, listener.proc.pid, flush=True)
time.sleep(60)
"""


def test_relay_and_listener_die_with_their_owner():
    _prerequisites()
    owner = subprocess.Popen([sys.executable, "-c", KILLED_OWNER, str(REPO)], stdout=subprocess.PIPE, text=True)
    namespace = host_device = None
    pids = []
    try:
        namespace, host_device, *pid_text = owner.stdout.readline().split()
        pids = [int(p) for p in pid_text]
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.02)
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
        # The relay held the only fds of both TUNs: the devices went with it.
        assert not Path(f"/sys/class/net/{host_device}").exists()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()
        for pid in pids:  # only if the test failed: the owner's children, by pid
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        if host_device:
            sh("ip", "link", "del", host_device, check=False)
        if namespace:  # a named namespace is a mount: it outlives its owner
            sh("ip", "netns", "del", namespace, check=False)
