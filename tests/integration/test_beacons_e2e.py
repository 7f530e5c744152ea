"""Issue 14's acceptance, end to end, as root: netwatchd on the SHIPPED config (only time
settings and where to watch/keep state changed, see CONFIG below), the real connect tracepoints
and the real TC classifier on a LAN of network namespaces, a private system bus.

Four callers run at once, each making CONNECTIONS TCP connections:
  p  a local command, every 2 s +-25% (uniform) to a listener on 127.x.y.z  -> one beacon
  q  a local command, the same number at random (Poisson) times, mean 2 s    -> nothing
  a  a local command, every 2 s +-25% to 127.x.y.z:53: allow-listed by the shipped
     beacons.allow_destinations ("127.0.0.0/8:53", the local resolver)      -> nothing
  d  a device in a namespace, every 2 s +-25% to a TCP sink on another device -> one beacon
  n  another device, the same to a third device's sink, whose address it first looks up in DNS
     (a name server on srv): the beacon's details carry that name            -> one beacon
Commands run under names of this run's own (nwb<tag><letter>), so their subjects are ours.

Time settings compressed: tick_interval_sec 0.5 (the shipped 1.0 works too; a faster tick only
makes the test's waits shorter) and alerts.learning_period_sec 0. Nothing in beacons: is
changed: the horizon (3600 s) and the minimum period (1 s) already fit a 2 s beacon. The
documented bound: an alert within MAX_PERIODS = 20 periods of the first connection.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from tests.conftest import require_root_and_bcc, require_tools, tool
from tests.harness import DaemonProcess, PrivateSystemBus, unvariant
from tests.integration.alert_e2e_world import TCP_SINK, mac_tail
from tests.integration.lan import DNS_SERVER, Lan

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((REPO / "config" / "netwatchd.yaml").read_text())
PERIOD, JITTER = 2.0, 0.25
CONNECTIONS = 26
MAX_PERIODS = 20
SINK_PORT = 7101

# A caller: CONNECTIONS TCP connections to host:port, periodic (PERIOD +- JITTER, uniform) or at
# random (exponential intervals, mean PERIOD); logs "<n> <time>" per connection to a file.
CALLER = r"""
import random, socket, sys, time
host, port, mode, count, seed, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
period, jitter = float(sys.argv[7]), float(sys.argv[8])
rng = random.Random(seed)
if len(sys.argv) > 9:  # look the destination's name up first, as a real caller would
    import struct
    name, server = sys.argv[9], sys.argv[10]
    query = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    u.sendto(query, (server, 53))
    u.recv(512)
with open(log, "a") as out:
    for n in range(1, count + 1):
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect((host, port))
        except OSError:
            pass
        s.close()
        out.write(f"{n} {time.time()}\n")
        out.flush()
        if n < count:
            time.sleep(period * (1 + jitter * rng.uniform(-1, 1)) if mode == "periodic" else rng.expovariate(1 / period))
"""

LISTENER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class World:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="nwd-beacons-"))
        self.tag = secrets.token_hex(3)
        self.bus = PrivateSystemBus()
        self.lan = Lan()
        self.daemon: DaemonProcess | None = None
        self.procs: List[subprocess.Popen] = []
        # a loopback address of this run's own: no one else's listener is there
        self.loop = f"127.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
        self.logs: Dict[str, Path] = {}

    def command(self, letter: str) -> str:
        return f"nwb{self.tag}{letter}"

    def build(self) -> None:
        """The LAN, its servers and the daemon: shipped config, time compressed, and
        devices.interfaces listing the LAN's ports (so every device: subject is ours)."""
        self.bus.start()
        self.lan.create_bridge()
        self.lan.add_node("srv", "00:1b:21:" + mac_tail())
        self.dev = self.lan.add_node("dev", "00:50:56:" + mac_tail())
        self.named = self.lan.add_node("named", "00:0c:29:" + mac_tail())
        self.c2 = self.lan.add_node("c2", "00:16:3e:" + mac_tail())
        self.c2_name = f"c2.nwb{self.tag}.test"
        srv = self.lan.nodes["srv"]
        self.lan.start(srv, sys.executable, "-c", TCP_SINK, str(SINK_PORT), ready="ready")
        self.lan.start(self.c2, sys.executable, "-c", TCP_SINK, str(SINK_PORT), ready="ready")
        self.lan.start(srv, sys.executable, "-c", DNS_SERVER, "53", json.dumps({self.c2_name: {"A": self.c2.ipv4}}),
                       ready="ready")
        config = dict(SHIPPED)
        config.update(state_directory=str(self.tmp / "state"), tick_interval_sec=0.5)
        config["devices"] = dict(SHIPPED["devices"], interfaces=self.lan.ports())
        config["alerts"] = dict(SHIPPED["alerts"], learning_period_sec=0)
        self.daemon = DaemonProcess(self.bus, config, about=("devices.interfaces",))
        self.daemon.start()

    def local(self, letter: str, port: int, mode: str, seed: int) -> None:
        self.procs.append(subprocess.Popen([sys.executable, "-c", LISTENER, self.loop, str(port)],
                                           stdout=subprocess.PIPE, text=True))
        assert self.procs[-1].stdout.readline().strip() == "ready"
        link = self.tmp / self.command(letter)
        os.symlink(os.path.realpath(sys.executable), link)  # exec'd under this name: its comm
        self.logs[letter] = self.tmp / f"{letter}.log"
        self.procs.append(subprocess.Popen([str(link), "-c", CALLER, self.loop, str(port), mode, str(CONNECTIONS),
                                            str(seed), str(self.logs[letter]), str(PERIOD), str(JITTER)]))

    def device(self, seed: int) -> None:
        self.logs["d"] = self.tmp / "d.log"
        self.lan.start(self.dev, sys.executable, "-c", CALLER, self.lan.nodes["srv"].ipv4, str(SINK_PORT),
                       "periodic", str(CONNECTIONS), str(seed), str(self.logs["d"]), str(PERIOD), str(JITTER))

    def named_device(self, seed: int) -> None:
        self.logs["n"] = self.tmp / "n.log"
        self.lan.start(self.named, sys.executable, "-c", CALLER, self.c2.ipv4, str(SINK_PORT), "periodic",
                       str(CONNECTIONS), str(seed), str(self.logs["n"]), str(PERIOD), str(JITTER), self.c2_name,
                       self.lan.nodes["srv"].ipv4)

    def sent(self, letter: str) -> List[float]:
        path = self.logs[letter]
        return [float(line.split()[1]) for line in path.read_text().splitlines()] if path.exists() else []

    def alerts(self) -> List[Dict]:
        return [unvariant(r) for r in reversed(self.daemon.call("ListAlerts", "u", 1000)[0])]

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(5)
        if self.daemon is not None:
            self.daemon.cleanup()
        self.lan.cleanup()
        self.bus.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def world():
    require_root_and_bcc()
    require_tools("ip", "dbus-daemon", "busctl")
    w = World()
    try:
        w.build()
        # seeds fixed so a run is repeatable; a Poisson caller may look regular by chance (the
        # benchmark measures how often: bench/beacon_bench.py), this one does not
        w.local("p", free_port(w.loop), "periodic", seed=1)
        w.local("q", free_port(w.loop), "poisson", seed=2)
        w.local("a", 53, "periodic", seed=3)
        w.device(seed=4)
        w.named_device(seed=5)
        deadline = time.monotonic() + CONNECTIONS * PERIOD * (1 + JITTER) + 60
        while any(len(w.sent(x)) < CONNECTIONS for x in "pqadn") and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)  # the last connections' records and ticks
        yield w
    finally:
        w.cleanup()
        assert not w.lan.leftovers(), f"left behind: {w.lan.leftovers()}"


def ours(w: World, subject: str) -> List[Dict]:
    return [a for a in w.alerts() if a["kind"] == "beacon" and a["subject"] == subject]


def periods_to(w: World, letter: str, alert: Dict) -> int:
    """Connections made before the alert, less one: how many periods it took."""
    sent = w.sent(letter)
    return sum(1 for t in sent if t * 1e6 <= alert["timestamp_usec"]) - 1


def assert_beacon_details(alert: Dict, destination: str, name: str = "") -> None:
    d = alert["details"]
    assert d["destination"] == destination
    assert d["name"] == name
    assert abs(float(d["period_sec"]) - PERIOD) <= 0.3, d
    # uniform +-25% jitter: a median absolute deviation of about a quarter of that range
    assert 0.1 <= float(d["jitter_sec"]) <= 0.4, d
    assert int(d["count"]) >= SHIPPED["beacons"]["min_connections"], d
    assert float(d["score"]) >= SHIPPED["beacons"]["score_threshold"] and alert["score"] == float(d["score"]), d
    assert alert["priority"] == 4


def test_a_local_command_on_a_timer_is_one_beacon_within_20_periods(world):
    w = world
    assert len(w.sent("p")) == CONNECTIONS
    (alert,) = ours(w, f"command:{w.command('p')}")
    assert_beacon_details(alert, f"{w.loop}:{w.procs[0].args[-1]}")
    assert alert["details"]["command"] == w.command("p")
    taken = periods_to(w, "p", alert)
    print(f"\ncommand beacon found after {taken} periods")
    assert 1 <= taken <= MAX_PERIODS


def test_the_same_connections_at_random_times_raise_nothing(world):
    assert len(world.sent("q")) == CONNECTIONS
    assert ours(world, f"command:{world.command('q')}") == []


def test_a_periodic_connection_to_an_allow_listed_destination_raises_nothing(world):
    assert len(world.sent("a")) == CONNECTIONS
    assert ours(world, f"command:{world.command('a')}") == []


def test_a_device_on_a_timer_is_one_beacon_on_its_mac(world):
    w = world
    assert len(w.sent("d")) == CONNECTIONS
    (alert,) = ours(w, f"device:{w.dev.mac}")
    assert_beacon_details(alert, f"{w.lan.nodes['srv'].ipv4}:{SINK_PORT}")
    assert alert["details"]["mac"] == w.dev.mac
    taken = periods_to(w, "d", alert)
    print(f"\ndevice beacon found after {taken} periods")
    assert 1 <= taken <= MAX_PERIODS


def test_beacons_are_counted_and_listed_by_netwatchctl(world):
    w = world
    counts = w.daemon.get_property("AlertCounts")
    assert counts["beacon"] >= 2  # ours; other people's processes on this machine may add theirs
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=w.bus.address)
    r = subprocess.run([tool("netwatchctl"), "alerts", "--limit", "1000"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"command:{w.command('p')}" in r.stdout and f"device:{w.dev.mac}" in r.stdout, r.stdout
    assert "beacon" in r.stdout


def test_a_device_beaconing_to_a_name_it_looked_up_is_reported_with_that_name(world):
    w = world
    assert len(w.sent("n")) == CONNECTIONS
    (alert,) = ours(w, f"device:{w.named.mac}")
    assert_beacon_details(alert, f"{w.c2.ipv4}:{SINK_PORT}", name=w.c2_name)
    assert f"({w.c2_name})" in alert["message"]
    assert 1 <= periods_to(w, "n", alert) <= MAX_PERIODS
