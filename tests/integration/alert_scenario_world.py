"""The world of the alert scenario suite (test_alert_scenarios.py): a private system bus, a LAN
of network namespaces with steady, jittered and ramping background traffic, background local
commands shaped the same way, and netwatchd on the SHIPPED config (config/netwatchd.yaml) with
only time compressed.

Devices (tests/integration/lan.py: each a namespace whose eth0 is a port of our bridge):
  srv      the peer everyone talks to: a dual-stack UDP echo and a TCP sink
  steady   ~30 TCP connects a tick to srv's sink (above device_connect_floor), Poisson
  jitter   anywhere from 0 to ~60 a tick, a new level every 0.1 s
  ramp     from ~5 to ~40 a tick over the run: slow enough for the baseline to follow
  busy     every second, one datagram to each of BUSY_PORTS ports of srv: a monitoring box
           with 120 usual peers -- after a restart they must not look first-seen
  scan     light background; runs nmap -sT of a few hundred ports later
  flood    light background; sends a few thousand SYNs to one closed port of srv in <0.1 s
  spoofer  light background; later claims victim's IPv4 address with forged ARP replies
  victim   light background (IPv4 and IPv6); answers back (flip-flops)
  mover4, mover6   light background over IPv4 and IPv6; each changes its MAC later, keeping its
           addresses: mover4's first frame from the new MAC is ARP, mover6's is NDP
  rand     a randomized (locally administered) MAC, eth0 down until its scenario
Every light background is a datagram to srv's echo every 0.2 s (IPv4, and IPv6 where said),
and a TCP connect every 0.4 s. A background pauses while a file `pause` exists in its
directory (the movers pause so that the test decides which frame the new MAC sends first).

Local commands (host namespace, each a symlink to Python under a name of this run's own:
nwc<tag><letter>) make refused connects to a bound, never-listening 127.0.0.1 port:
  s  steady ~8 a second; on "burst N", N connects as fast as it can (the storm)
  j  jittered: 0..3x of 20 a second, a new level every 0.1 s
  r  ramping from 10 to 160 a second (5 to 80 a tick, across process_connect_floor) over
     RAMP_SEC
Every process, namespace and file is removed by cleanup(), by pid, even when a test fails.
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import yaml

from netwatchd.store.state_files import history_path
from netwatchd.alerting.observation import TickObservation
from netwatchd.store.tick_history import HistoryError, TickHistory
from tests.harness import DaemonProcess, PrivateSystemBus, unvariant
from tests.integration.alert_bus_support import LineProcess
from tests.integration.lan import UDP_ECHO, Lan, Node

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "netwatchd.yaml"

# Only time is compressed (hard rule): the tick, the learning period, the warm-up, the store
# interval. Everything else -- consecutive_ticks, floors, cold rate, z and burst thresholds,
# cooldown, seasonality -- is as shipped.
TICK = 0.5  # stable on a shared 2-core machine; counts per tick are half the per-second rates
LEARNING_SEC = 12  # the background devices all appear in the first seconds
WARMUP_TICKS = 100  # the shipped EWMA (alpha 0.02) has converged to ~90% by then
STORE_INTERVAL = 1.0  # inventory, baselines, known patterns and tick history written this often
TIME_SETTINGS = {"tick_interval_sec": TICK, "alerts.learning_period_sec": LEARNING_SEC,
                 "alerts.warmup_ticks": WARMUP_TICKS, "alerts.state_save_interval_sec": STORE_INTERVAL,
                 "devices.store_interval_sec": STORE_INTERVAL}

ECHO_PORT, SINK_PORT, CLOSED_PORT = 7000, 7001, 7999
BUSY_PORTS = range(8000, 8120)
RAMP_SEC = 120.0

LIGHT = ("scan", "flood", "spoofer", "victim", "mover4", "mover6")
DUAL_STACK = ("victim", "mover4", "mover6")

# A device's background: datagrams to srv's echo (IPv4, IPv6 with --v6) every 0.2 s, and TCP
# connects to srv's sink, `shape` deciding how many per 0.1 s step; a datagram to each of a
# range of ports every second with --sweep. Pauses while <dir>/pause exists.
BG_DEVICE = r"""
import os, random, socket, sys, time
srv4, srv6, echo, sink, shape, rate, pause = sys.argv[1:8]
echo, sink, rate = int(echo), int(sink), float(rate)
v6 = "--v6" in sys.argv
sweep = [int(p) for p in sys.argv[sys.argv.index("--sweep") + 1].split("-")] if "--sweep" in sys.argv else None
u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u4.setblocking(False)
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u6.setblocking(False)
start = time.monotonic()
step, budget, last_sweep = 0, 0.0, 0.0
while True:
    now = time.monotonic()
    if os.path.exists(pause):
        time.sleep(0.05)
        continue
    if step % 2 == 0:
        for s, dst in ((u4, srv4),) + (((u6, srv6),) if v6 else ()):
            try:
                s.sendto(b"background", (dst, echo))
                while s.recv(2048):
                    pass
            except OSError:
                pass
    if sweep and now - last_sweep >= 1.0:
        last_sweep = now
        for port in range(sweep[0], sweep[1]):
            try:
                u4.sendto(b"poll", (srv4, port))
            except OSError:
                pass
    if shape == "steady":
        level = rate
    elif shape == "jitter":
        level = random.uniform(0, 2 * rate)
    elif shape == "ramp":
        level = rate * (1 + 7 * min(1.0, (now - start) / float(sys.argv[8])))
    else:  # light: one connect every 0.4 s
        level = 2.5 if step % 4 == 0 else 0
        budget = 0.0
    budget += level * 0.1
    for _ in range(int(budget)):
        t = socket.socket()
        t.settimeout(0.3)
        try:
            t.connect((srv4, sink))
        except OSError:
            pass
        t.close()
    budget -= int(budget)
    step += 1
    time.sleep(max(0.0, start + step * 0.1 - time.monotonic()))
"""

# srv's TCP sink: accepts and closes.
TCP_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(512)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""

# A local command: refused connects to 127.0.0.1; shape as for devices; "burst N" on stdin makes N
# at once (answered "burst N <seconds>"); ends when stdin closes.
BG_COMMAND = r"""
import random, socket, sys, threading, time
shape, rate, ramp_sec = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
closed = socket.socket()
closed.bind(("127.0.0.1", 0))
target = closed.getsockname()
bursts, eof = [], threading.Event()
def read():
    for line in sys.stdin:
        bursts.append(int(line.split()[1]))
    eof.set()
threading.Thread(target=read, daemon=True).start()
def connect():
    s = socket.socket()
    s.connect_ex(target)
    s.close()
print("ready", flush=True)
start = time.monotonic()
step, budget = 0, 0.0
while not eof.is_set():
    while bursts:
        n = bursts.pop(0)
        t0 = time.monotonic()
        for _ in range(n):
            connect()
        print("burst", n, round(time.monotonic() - t0, 3), flush=True)
    now = time.monotonic()
    if shape == "steady":
        level = rate
    elif shape == "jitter":
        level = random.uniform(0, 3 * rate)
    else:
        level = rate * (1 + 15 * min(1.0, (now - start) / ramp_sec))
    budget += level * 0.1
    for _ in range(int(budget)):
        connect()
    budget -= int(budget)
    step += 1
    time.sleep(max(0.0, start + step * 0.1 - time.monotonic()))
"""

# In a namespace: `count` TCP SYNs from this device to (dst_ip, port), as raw frames with right
# checksums, as fast as the socket takes them (a SYN flood tool would do the same); prints the
# seconds it took.
SYN_FLOOD = r"""
import random, socket, struct, sys, time
src_mac, dst_mac, src_ip, dst_ip, port, count = sys.argv[1:7]
port, count = int(port), int(count)
def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
mac = lambda m: bytes.fromhex(m.replace(":", ""))
src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
frames = []
for n in range(count):
    sport = 20000 + n
    tcp = struct.pack("!HHIIBBHHH", sport, port, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), n & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    frames.append(mac(dst_mac) + mac(src_mac) + b"\x08\x00" + ip + tcp)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
t0 = time.monotonic()
for f in frames:
    s.send(f)
print(round(time.monotonic() - t0, 4))
"""


def mac_tail(n: int = 3) -> str:
    return ":".join(f"{b:02x}" for b in os.urandom(n))


def randomized_mac() -> str:
    first = (secrets.randbits(8) & 0xFC) | 0x02  # locally administered, unicast
    return f"{first:02x}:" + mac_tail(5)


def shipped_config_with_time_compressed(state: Path, ports: List[str]) -> Dict:
    """config/netwatchd.yaml as shipped; only TIME_SETTINGS changed, plus where state lives
    and which interfaces to watch (our bridge ports: never the host's)."""
    cfg = yaml.safe_load(SHIPPED.read_text())
    for dotted, value in TIME_SETTINGS.items():
        *section, key = dotted.split(".")
        (cfg[section[0]] if section else cfg)[key] = value
    cfg["state_directory"] = str(state)
    cfg["devices"]["interfaces"] = list(ports)
    return cfg


class World:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="nwd-scenarios-"))
        self.state = self.tmp / "state"
        self.bin = self.tmp / "bin"
        self.bin.mkdir()
        self.tag = secrets.token_hex(3)
        self.bus = PrivateSystemBus()
        self.lan = Lan()
        self.daemons: List[DaemonProcess] = []
        self.commands: Dict[str, LineProcess] = {}
        self.nmap = str(self.bin / f"nws{self.tag}")  # nmap under a name of this run's own

    # -- names ------------------------------------------------------------------------------
    def command(self, letter: str) -> str:
        return f"nwc{self.tag}{letter}"

    def node(self, name: str) -> Node:
        return self.lan.nodes[name]

    @property
    def d(self) -> DaemonProcess:
        return self.daemons[-1]

    def pause_file(self, name: str) -> Path:
        return self.tmp / f"pause-{name}"

    # -- building ---------------------------------------------------------------------------
    def build(self) -> None:
        self.bus.start()
        self.lan.create_bridge()
        vendors = {"srv": "00:1b:21", "steady": "00:00:0c", "jitter": "b8:27:eb", "ramp": "00:1e:0b",
                   "busy": "00:14:22", "scan": "00:50:56", "flood": "00:25:90", "spoofer": "00:0c:29",
                   "victim": "00:1b:63", "mover4": "00:16:3e", "mover6": "00:16:3e"}
        for name, oui in vendors.items():
            self.lan.add_node(name, f"{oui}:{mac_tail()}")
        self.lan.add_node("rand", randomized_mac())
        self.lan.ns(self.node("rand"), "ip", "link", "set", "eth0", "down")  # unplugged until its scenario
        srv = self.node("srv")
        py = sys.executable
        self.lan.start(srv, py, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
        self.lan.start(srv, py, "-c", TCP_SINK, str(SINK_PORT), ready="ready")
        os.symlink(shutil.which("nmap") or "/usr/bin/nmap", self.nmap)
        self.start_daemon()
        shapes = {"steady": ("steady", 60), "jitter": ("jitter", 60), "ramp": ("ramp", 10), "busy": ("light", 0)}
        shapes.update({name: ("light", 0) for name in LIGHT})
        for name, (shape, rate) in shapes.items():
            extra = ["--v6"] if name in DUAL_STACK else []
            if name == "busy":
                extra += ["--sweep", f"{BUSY_PORTS.start}-{BUSY_PORTS.stop}"]
            self.lan.start(self.node(name), py, "-c", BG_DEVICE, srv.ipv4, srv.ipv6, str(ECHO_PORT), str(SINK_PORT),
                           shape, str(rate), str(self.pause_file(name)), str(RAMP_SEC), *extra)
        python = os.path.realpath(sys.executable)
        for letter, (shape, rate) in {"s": ("steady", 8), "j": ("jitter", 20), "r": ("ramp", 10)}.items():
            link = self.bin / self.command(letter)
            os.symlink(python, link)  # exec'd under this name: its comm is the command's name
            proc = LineProcess([str(link), "-c", BG_COMMAND, shape, str(rate), str(RAMP_SEC)], self.bus,
                               ends_on_stdin_eof=True)
            self.commands[letter] = proc
            proc.wait_line("ready", timeout=30)

    def config(self) -> Dict:
        return shipped_config_with_time_compressed(self.state, self.lan.ports())

    def start_daemon(self) -> DaemonProcess:
        """The shipped config, time compressed; devices.interfaces lists the LAN's ports so that
        every device:/ip: subject is the scenario's own."""
        d = DaemonProcess(self.bus, self.config(), about=("devices.interfaces",))
        self.daemons.append(d)
        d.start()
        return d

    # -- acting -----------------------------------------------------------------------------
    def udp(self, name: str, v6: bool = False) -> None:
        srv = self.node("srv")
        self.lan.send_udp(self.node(name), [f"[{srv.ipv6}]:{ECHO_PORT}" if v6 else f"{srv.ipv4}:{ECHO_PORT}"], 1)

    def burst(self, letter: str, n: int) -> float:
        proc = self.commands[letter]
        since = len(proc.out)
        proc.send(f"burst {n}")
        line = proc.out[proc.wait_line(lambda s: s.startswith(f"burst {n} "), since, timeout=60)]
        return float(line.split()[2])

    def syn_flood(self, name: str, count: int) -> float:
        node, srv = self.node(name), self.node("srv")
        route = self.lan.ns(node, "ip", "route", "get", srv.ipv4).stdout
        assert "dev eth0" in route, route  # into our own LAN, nowhere else
        out = self.lan.python(node, SYN_FLOOD, node.mac, srv.mac, node.ipv4, srv.ipv4, str(CLOSED_PORT), str(count))
        return float(out)

    # -- reading ----------------------------------------------------------------------------
    def alerts(self) -> List[Dict]:
        """ListAlerts, oldest first (alerts.json keeps them across restarts)."""
        return [unvariant(r) for r in reversed(self.d.call("ListAlerts", "u", 1000)[0])]

    def ticks(self) -> List[TickObservation]:
        try:
            with TickHistory.open_readonly(history_path(str(self.state))) as h:
                return list(h.read())
        except HistoryError:
            return []

    def wait_ticks(self, after_usec: int, n: int, timeout: Optional[float] = None) -> List[TickObservation]:
        """Until the daemon has processed (and recorded) `n` ticks after `after_usec`: its ticks."""
        deadline = time.monotonic() + (timeout or n * TICK * 4 + 15)
        while True:
            later = [t for t in self.ticks() if t.time_usec > after_usec]
            if len(later) >= n:
                return later
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon recorded {len(later)} of {n} ticks after {after_usec}:\n"
                                     f"{self.d.log()[-3000:]}")
            time.sleep(0.2)

    def first_tick(self, after_usec: int, saw: Callable[[TickObservation], bool], timeout: float = 20) -> int:
        """Time of the first recorded tick after `after_usec` whose observation `saw` the event."""
        deadline = time.monotonic() + timeout
        while True:
            for t in self.ticks():
                if t.time_usec > after_usec and saw(t):
                    return t.time_usec
            if time.monotonic() > deadline:
                raise AssertionError("no tick saw the event")
            time.sleep(0.2)

    # -- teardown ---------------------------------------------------------------------------
    def cleanup(self) -> None:
        steps = [proc.stop for proc in self.commands.values()]
        steps += [d.cleanup for d in self.daemons]
        steps += [self.lan.cleanup, self.bus.stop]
        errors = []
        for step in steps:  # every step, whatever the one before did
            try:
                step()
            except Exception as e:  # noqa: BLE001 - reported below, after the rest is cleaned
                errors.append(f"{step}: {e}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise RuntimeError("cleanup: " + "; ".join(errors))
