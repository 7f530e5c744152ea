"""A TCP peer "delay_ms away" from the host, for connect-latency tests.

Two TUN devices joined by a user-space relay (`tun_relay.py`, a process of its own):

    host: nwdlyA-<sfx> 10.213.Y.Z+1/30  <-- relay -->  nwdlyB-<sfx> 10.213.Y.Z+2/30 :netns nwdly-<sfx>

Every packet going towards the namespace waits `delay_ms` in the relay; the way back is not
delayed, so the client's SYN -> SYN-ACK round trip (a blocking connect()) takes about delay_ms.
There is no netem on the machines this runs on, hence the relay.

    with DelayedPeer(delay_ms=20) as peer:
        listener = peer.listen(mode="close")
        socket.create_connection((peer.address, listener.port))

`cleanup()` (also the context manager's exit, and `start()` when it fails half-way) removes
everything even after a failed test: processes in the namespace and the relay by pid, the TUN
devices (they vanish with the relay's fds, and are deleted by name besides), the namespace and
with it any nft rule `drop_syns()` made. The relay and the listeners also die with the process
that started them (PR_SET_PDEATHSIG: start the peer from a thread that outlives it, e.g. the main
one); a killed test still leaves its named namespace behind, empty.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import random
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from tests.support.processes import stop_processes
from tests.support.lan import sh

RELAY_SCRIPT = Path(__file__).with_name("tun_relay.py")
LISTENER_SCRIPT = Path(__file__).with_name("ns_listener.py")
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
# 10.213.0.0/16 is used by nothing else in this project; each peer takes one random /30 of it.
SUPERNET = "10.213"
NFT_TABLE = "nwdly"
LISTENER_MODES = ("keep", "close", "rst")


class RouteError(RuntimeError):
    """The peer's address is not routed through the peer's own TUN device: refuse to send."""


@dataclass(frozen=True)
class Listener:
    proc: subprocess.Popen  # stop it by pid (proc.terminate()), or leave it to cleanup()
    port: int
    mode: str


@dataclass(frozen=True)
class RelayCounters:
    a2b_in: int  # packets read from the host side (towards the namespace)
    a2b_out: int  # ... and written to the namespace side after the delay
    b2a_in: int
    b2a_out: int
    errors: int  # failed writes, either way
    queued: int  # delayed packets not yet due
    late_max_us: int  # worst lateness of a delayed write past its due time
    late_over_1ms: int


@dataclass
class DelayedPeer:
    delay_ms: float = 20
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    procs: List[subprocess.Popen] = field(default_factory=list)
    relay: Optional[subprocess.Popen] = None
    network: Optional[ipaddress.IPv4Network] = None
    _fds: List[int] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return f"nwdly-{self.suffix}"

    @property
    def host_device(self) -> str:
        return f"nwdlyA-{self.suffix}"

    @property
    def ns_device(self) -> str:
        return f"nwdlyB-{self.suffix}"

    @property
    def host_address(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def address(self) -> str:
        """The namespace side: connect here to be delay_ms away."""
        return str(self.network.network_address + 2)

    # -- set-up and teardown -----------------------------------------------------------------
    def start(self) -> "DelayedPeer":
        try:
            self.network = free_subnet()
            self._fds.append(open_tun(self.host_device))
            self._fds.append(open_tun(self.ns_device))
            fd_a, fd_b = self._fds
            sh("ip", "netns", "add", self.namespace)
            # The fd keeps working after the move: the relay stays in the host namespace.
            sh("ip", "link", "set", self.ns_device, "netns", self.namespace)
            # No IPv6 on either side: router solicitations and MLD would be relay traffic
            # nobody asked for.
            Path(f"/proc/sys/net/ipv6/conf/{self.host_device}/disable_ipv6").write_text("1")
            self.set_sysctl(f"net/ipv6/conf/{self.ns_device}/disable_ipv6", "1")
            sh("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_device)
            sh("ip", "link", "set", self.host_device, "up")
            self.run("ip", "link", "set", "lo", "up")
            self.run("ip", "addr", "add", f"{self.address}/30", "dev", self.ns_device)
            self.run("ip", "link", "set", self.ns_device, "up")
            self.relay = subprocess.Popen(
                [sys.executable, str(RELAY_SCRIPT), "--fd-a", str(fd_a), "--fd-b", str(fd_b),
                 "--delay-ms", str(self.delay_ms), "--parent", str(os.getpid())],
                pass_fds=(fd_a, fd_b), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
            _expect_line(self.relay, "ready", "the delay relay")
            # Only the relay holds the TUNs now: if it dies, both devices go with it.
            self._close_fds()
            self.check_route()
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        stop_processes([*self.procs, *([self.relay] if self.relay else [])])
        self._close_fds()
        for dev in (self.host_device, self.ns_device):
            if _link_exists(dev):
                sh("ip", "link", "del", dev, check=False)
        if self.namespace in _netns_list():
            sh("ip", "netns", "del", self.namespace, check=False)

    def __enter__(self) -> "DelayedPeer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def leftovers(self) -> List[str]:
        """What of ours still exists (for a test of the cleanup itself)."""
        left = [d for d in (self.host_device, self.ns_device) if _link_exists(d)]
        left += [self.namespace] if self.namespace in _netns_list() else []
        return left + [f"pid {p.pid}" for p in [*self.procs, self.relay] if p and p.poll() is None]

    # -- the route guard ---------------------------------------------------------------------
    def route_ok(self) -> bool:
        """True when the kernel sends to `address` straight out of our host TUN device."""
        r = sh("ip", "-j", "route", "get", self.address, check=False)
        if r.returncode != 0:
            return False
        route = json.loads(r.stdout)[0]
        return (route.get("dev") == self.host_device and "gateway" not in route
                and route.get("prefsrc") == self.host_address)

    def check_route(self) -> None:
        if not self.route_ok():
            got = sh("ip", "route", "get", self.address, check=False)
            raise RouteError(f"{self.address} is not routed via {self.host_device}, refusing to "
                             f"send there: {(got.stdout or got.stderr).strip()}")

    # -- running things in the namespace -----------------------------------------------------
    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.namespace, *argv, check=check, timeout=timeout)

    def start_process(self, *argv: str, ready: Optional[str] = None, timeout: float = 10) -> subprocess.Popen:
        """A long-running process in the namespace, stopped by pid in cleanup() (`ip netns exec`
        execs, so the pid is the command's). With `ready`, waits up to `timeout` s for a first
        stdout line starting with it (then the rest of stdout stays in the pipe: say little)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespace, *argv], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if ready is not None else subprocess.DEVNULL, text=True)
        self.procs.append(proc)
        if ready is not None:
            proc.ready_line = _expect_line(proc, ready, argv[0], timeout)
        return proc

    def listen(self, port: int = 0, mode: str = "keep") -> Listener:
        """A TCP listener on address:port in the namespace (port 0: the kernel picks one).
        Modes: keep (holds connections open), close (FIN after accept), rst (RST after accept)."""
        if mode not in LISTENER_MODES:
            raise ValueError(f"mode {mode!r} not in {LISTENER_MODES}")
        proc = self.start_process(sys.executable, str(LISTENER_SCRIPT), mode, self.address, str(port),
                                  str(os.getpid()), ready="ready")
        return Listener(proc, int(proc.ready_line.split()[1]), mode)

    def set_sysctl(self, name: str, value: str) -> None:
        """A sysctl of the namespace (net.* is per namespace), e.g. net.ipv4.tcp_syncookies."""
        self.run("sysctl", "-qw", f"{name}={value}")

    # -- nftables in the namespace -----------------------------------------------------------
    def drop_syns(self, port: int) -> None:
        """Drops (silently, with a counter) SYNs to `port` arriving in the namespace: a connect
        to it stays pending. The rule lives in the namespace and goes with it."""
        self._nft(f"""table inet {NFT_TABLE} {{
            chain input {{
                type filter hook input priority filter; policy accept;
                tcp dport {int(port)} tcp flags & (syn | ack) == syn counter drop comment "syn-drop-{int(port)}"
            }}
        }}""")

    def clear_drops(self) -> None:
        """Removes every rule drop_syns() added."""
        self._nft(f"flush chain inet {NFT_TABLE} input")

    def syn_drops(self, port: int) -> int:
        """SYNs to `port` dropped so far."""
        out = self.run(_nft_path(), "-j", "list", "chain", "inet", NFT_TABLE, "input").stdout
        return sum(e["counter"]["packets"] for item in json.loads(out)["nftables"] if "rule" in item
                   and item["rule"].get("comment") == f"syn-drop-{int(port)}"
                   for e in item["rule"]["expr"] if "counter" in e)

    def _nft(self, script: str) -> None:
        r = subprocess.run(["ip", "netns", "exec", self.namespace, _nft_path(), "-f", "-"], input=script,
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"nft in {self.namespace} failed: {r.stderr.strip()}")

    # -- the relay ---------------------------------------------------------------------------
    def relay_counters(self) -> RelayCounters:
        """The relay's packet counters, asked for with SIGUSR1."""
        self.relay.send_signal(signal.SIGUSR1)
        return RelayCounters(*map(int, _expect_line(self.relay, "", "the relay's counters").split()))

    def _close_fds(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


def free_subnet(tries: int = 100) -> ipaddress.IPv4Network:
    """A random /30 of 10.213.0.0/16 that no route in any table on the host overlaps."""
    routes = json.loads(sh("ip", "-4", "-j", "route", "show", "table", "all").stdout)
    taken = [ipaddress.ip_network(r["dst"], strict=False) for r in routes if r.get("dst") not in (None, "default")]
    rng = random.SystemRandom()
    for _ in range(tries):
        net = ipaddress.ip_network(f"{SUPERNET}.{rng.randrange(256)}.{4 * rng.randrange(64)}/30")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise RuntimeError(f"no free /30 in {SUPERNET}.0.0/16 after {tries} tries")


def open_tun(name: str) -> int:
    """A new TUN device `name` (IP packets, no packet-info header); gone when the fd closes."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _expect_line(proc: subprocess.Popen, prefix: str, what: str, timeout: float = 10) -> str:
    """The next stdout line of `proc`, which must start with `prefix`; never blocks past timeout."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().strip() if ready else ""
    if not ready or not line.startswith(prefix):
        raise RuntimeError(f"{what} printed no {prefix!r} line within {timeout} s: {line!r} (exit {proc.poll()})")
    return line


def _link_exists(dev: str) -> bool:
    return Path(f"/sys/class/net/{dev}").exists()


def _netns_list() -> List[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line.strip()]


def _nft_path() -> str:
    path = shutil.which("nft", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if path is None:
        raise RuntimeError("nft not found: apt-get install nftables (make setup-test installs it)")
    return path
