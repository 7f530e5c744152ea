"""The world of the end-to-end alert tests (test_alerts_e2e.py): a private system bus, a private
journald, a LAN of network namespaces, background traffic on it, background local commands, an
AlertRaised subscriber, and netwatchd (run inside the journald's namespace) watching it all.

Devices (tests/integration/lan.py; each a namespace whose eth0 is a veth on our bridge):
  srv     the peer everyone talks to: a UDP echo and a TCP sink; the scan's target
  cisco, pi       quiet background: a datagram every 0.2 s and a TCP connect every 0.4 s to srv
  scan    the same background; runs nmap later
  mover   the same background (UDP only); changes its MAC later
  newdev, rand1, rand2, rand3     made at the start with eth0 DOWN: silent, so absent while the
          daemon learns; each "joins" in its scenario by setting eth0 up (plugging the cable in).
          Their bridge ports are up and watched from the start, so joining is seen at once.
Every name carries a random suffix, and the daemon watches only our bridge ports (a list in its
config), so every device and address it reports is ours.

Local commands: background processes in the host namespace, each a symlink to the Python
interpreter under a unique name (nwa<hex><letter>, so its comm, and its alert subject, belong to
this run only), each making BG_RATE refused connects per second to 127.0.0.1 (a port bound and
never listened on) and told to change rate on stdin.

Everything is stopped by pid and removed in cleanup(), which the module fixture calls even when a
test fails: processes, daemons, journald's namespace, the bus, the LAN, the temporary directory.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from netwatchd.store.state_files import history_path
from netwatchd.alerting.observation import TickObservation
from netwatchd.store.tick_history import HistoryError, TickHistory
from tests.harness import BusctlError, DaemonProcess, PrivateSystemBus, unvariant
from tests.integration.alert_bus_support import LineProcess, Subscriber
from tests.integration.lan import UDP_ECHO, Lan, Node
from tests.journal_harness import PrivateJournal

TICK = 0.5
STORE_INTERVAL = 1.0  # inventory, baselines and tick history written this often (both save intervals)
LEARNING_SEC = 8
WARMUP_TICKS = 12
BG_RATE = 8  # connects per second of each background command: 4 per tick
ECHO_PORT, SINK_PORT = 7000, 7001

# What the tests change in the alerts section: time only (the shipped config otherwise).
ALERTS = {"learning_period_sec": LEARNING_SEC, "warmup_ticks": WARMUP_TICKS}
# The shipped alerts settings, which the assertions are about.
SHIPPED_ALERTS = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "netwatchd.yaml").read_text())["alerts"]


# A background command: refused connects to 127.0.0.1 at `rate` per second, paced in small
# steps; "rate N" on stdin changes it (answered "rate N" once applied); ends when stdin closes.
BG_COMMAND = r"""
import socket, sys, threading, time
rate = float(sys.argv[1])
closed = socket.socket()
closed.bind(("127.0.0.1", 0))  # bound, never listening: each connect is refused at once
target = closed.getsockname()
eof = threading.Event()
def read():
    global rate
    for line in sys.stdin:
        rate = float(line.split()[1])
        print("rate", line.split()[1], flush=True)
    eof.set()
threading.Thread(target=read, daemon=True).start()
print("ready", flush=True)
budget, last = 0.0, time.monotonic()
while not eof.is_set():
    now = time.monotonic()
    budget = min(budget + rate * (now - last), max(rate * 0.05, 1.0))
    last = now
    for _ in range(int(budget)):
        s = socket.socket()
        s.connect_ex(target)
        s.close()
    budget -= int(budget)
    time.sleep(0.005)
"""

# A device's background traffic: a datagram to srv's echo every 0.2 s (the echo comes back) and,
# with a TCP port, a connection to srv's sink every other round.
BG_DEVICE = r"""
import socket, sys, time
srv, udp_port, tcp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setblocking(False)
n = 0
while True:
    try:
        u.sendto(b"background", (srv, udp_port))
        while u.recv(2048):
            pass
    except OSError:
        pass
    if tcp_port and n % 2 == 0:
        t = socket.socket()
        t.settimeout(0.3)
        try:
            t.connect((srv, tcp_port))
        except OSError:
            pass
        t.close()
    n += 1
    time.sleep(0.2)
"""

# srv's TCP sink: accepts and closes.
TCP_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""

BACKGROUND = ("cisco", "pi", "scan", "mover")
LATE = ("newdev", "rand1", "rand2", "rand3")
COMMANDS = {  # letter -> what the command is for
    "s": "the storm after warm-up",
    "r": "the storm right after a restart",
    "m": "a moderate burst under the first floor",
    "n": "the same burst after a reload lowered the floor",
    "b": "the same burst after a broken file was rejected",
}


def mac_tail(n: int = 3) -> str:
    return ":".join(f"{b:02x}" for b in os.urandom(n))


def randomized_mac() -> str:
    first = (secrets.randbits(8) & 0xFC) | 0x02  # locally administered, unicast
    return f"{first:02x}:" + mac_tail(5)


class World:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="nwd-alerts-e2e-"))
        self.state = self.tmp / "state"
        self.bin = self.tmp / "bin"
        self.bin.mkdir()
        self.tag = secrets.token_hex(3)
        self.bus = PrivateSystemBus()
        self.journal = PrivateJournal()
        self.lan = Lan()
        self.daemons: List[DaemonProcess] = []
        self.commands: Dict[str, LineProcess] = {}  # letter -> process
        self.subscriber: Optional[Subscriber] = None
        self.alerts_cfg = dict(ALERTS)
        self.reloaded_keys: tuple = ()  # alerts keys a test changed by a reload (it is about them)
        self.nmap = str(self.bin / f"nws{self.tag}")  # nmap under a name of this run's own
        self.storm_usec = 0  # when the first storm's alert was raised (replay finds it again)

    # -- names ------------------------------------------------------------------------------
    def command(self, letter: str) -> str:
        return f"nwa{self.tag}{letter}"

    def node(self, name: str) -> Node:
        return self.lan.nodes[name]

    @property
    def d(self) -> DaemonProcess:
        return self.daemons[-1]

    # -- building ---------------------------------------------------------------------------
    def build(self) -> None:
        self.bus.start()
        self.journal.start()
        self.lan.create_bridge()
        self.lan.add_node("srv", "00:1b:21:" + mac_tail())  # Intel
        self.lan.add_node("cisco", "00:00:0c:" + mac_tail())
        self.lan.add_node("pi", "b8:27:eb:" + mac_tail())
        self.lan.add_node("scan", "00:50:56:" + mac_tail())  # VMware
        self.lan.add_node("mover", "00:16:3e:" + mac_tail())  # Xen
        self.lan.add_node("newdev", "00:0c:29:" + mac_tail())  # VMware
        for name in ("rand1", "rand2", "rand3"):
            self.lan.add_node(name, randomized_mac())
        for name in LATE:  # unplugged until their scenario
            self.lan.ns(self.node(name), "ip", "link", "set", "eth0", "down")
        srv = self.node("srv")
        py = sys.executable
        self.lan.start(srv, py, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
        self.lan.start(srv, py, "-c", TCP_SINK, str(SINK_PORT), ready="ready")
        os.symlink(shutil.which("nmap") or "/usr/bin/nmap", self.nmap)
        self.subscriber = Subscriber(self.bus)  # before the daemon: sees every AlertRaised
        self.start_daemon()
        for name in BACKGROUND:
            tcp = SINK_PORT if name in ("cisco", "pi", "scan") else 0
            self.lan.start(self.node(name), py, "-c", BG_DEVICE, srv.ipv4, str(ECHO_PORT), str(tcp))
        python = os.path.realpath(sys.executable)
        for letter in COMMANDS:
            link = self.bin / self.command(letter)
            os.symlink(python, link)  # exec'd under this name: its comm is the command's name
            proc = LineProcess([str(link), "-c", BG_COMMAND, str(BG_RATE)], self.bus, ends_on_stdin_eof=True)
            self.commands[letter] = proc
            proc.wait_line("ready", timeout=30)

    def config(self) -> Dict:
        return {"state_directory": str(self.state), "tick_interval_sec": TICK,
                "devices": {"interfaces": self.lan.ports(), "store_interval_sec": STORE_INTERVAL},
                "alerts": {"state_save_interval_sec": STORE_INTERVAL, **self.alerts_cfg}}

    def start_daemon(self) -> DaemonProcess:
        """The shipped config with time compressed; devices.interfaces lists the LAN's bridge
        ports, so that every device:/ip: subject is ours (the host's own interfaces carry other
        people's devices). A restart keeps what earlier reloads changed (reloaded_keys), as it
        would for a user."""
        d = DaemonProcess(self.bus, self.config(), command_prefix=self.journal.command(),
                          about=("devices.interfaces",) + self.reloaded_keys)
        self.daemons.append(d)
        d.start()
        return d

    # -- acting -----------------------------------------------------------------------------
    def set_rate(self, letter: str, rate: int) -> None:
        proc = self.commands[letter]
        since = len(proc.out)
        proc.send(f"rate {rate}")
        proc.wait_line(f"rate {rate}", since)

    def udp(self, name: str, count: int = 1) -> None:
        self.lan.send_udp(self.node(name), [f"{self.node('srv').ipv4}:{ECHO_PORT}"], count)

    def plug_in(self, name: str) -> None:
        """The device's cable goes in: eth0 up, then it talks to srv (and ARPs for it)."""
        self.lan.ns(self.node(name), "ip", "link", "set", "eth0", "up")
        self.udp(name)

    # -- reading ----------------------------------------------------------------------------
    def alerts(self) -> List[Dict]:
        """ListAlerts, oldest first (alerts.json keeps them across restarts)."""
        try:
            records = self.d.call("ListAlerts", "u", 1000)[0]
        except BusctlError as e:  # say why: a daemon that died, or one that stopped answering
            raise AssertionError(f"ListAlerts failed: {e}; daemon exit status {self.d.proc.poll()}\n"
                                 f"{self.daemon_journal()}") from None
        return [unvariant(r) for r in reversed(records)]

    def signals(self) -> List[List[str]]:
        return self.subscriber.signals_after_sync()

    def ticks(self, until_usec: int, timeout: float = 10) -> List[TickObservation]:
        """The daemon's ticks as its replay history recorded them, once the history reaches
        `until_usec` (it is written every STORE_INTERVAL)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with TickHistory.open_readonly(history_path(str(self.state))) as h:
                    ticks = list(h.read())
            except HistoryError:
                ticks = []
            if ticks and ticks[-1].time_usec >= until_usec:
                return ticks
            if time.monotonic() > deadline:
                raise AssertionError(f"the tick history does not reach {until_usec}: {ticks[-1:]}")
            time.sleep(0.2)

    def tick_times(self, until_usec: int, timeout: float = 10) -> List[int]:
        return [obs.time_usec for obs in self.ticks(until_usec, timeout)]

    def daemon_journal(self) -> str:
        return self.journal.journalctl("-o", "short-precise", "SYSLOG_IDENTIFIER=netwatchd", check=False).stdout[-6000:]

    # -- teardown ---------------------------------------------------------------------------
    def cleanup(self) -> None:
        steps = [proc.stop for proc in self.commands.values()]
        if self.subscriber is not None:
            steps.append(self.subscriber.stop)
        steps += [d.cleanup for d in self.daemons]
        steps += [self.lan.cleanup, self.journal.stop, self.bus.stop]
        errors = []
        for step in steps:  # every step, whatever the one before did
            try:
                step()
            except Exception as e:  # noqa: BLE001 - reported below, after the rest is cleaned
                errors.append(f"{step}: {e}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise RuntimeError("cleanup: " + "; ".join(errors))


def dump(alerts: List[Dict]) -> str:
    return json.dumps([{k: a[k] for k in ("kind", "subject", "timestamp_usec", "message")} for a in alerts], indent=1)
