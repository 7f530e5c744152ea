"""A LAN of network namespaces for the device tests: each namespace is one device, its `eth0`
a veth whose host-side end is a port of a bridge in the host namespace. netwatchd watches the
ports (a frame between two devices crosses their ports, never the bridge's own interface).

Names carry a random suffix so runs never meet each other or anyone else's namespaces; the
host side is silent (no IPv6 on the bridge or its ports, no IPv4 address), so every frame on
the LAN was sent by a device. Everything is removed by `cleanup()`, which a fixture calls even
when a test fails: processes by pid, then the veths, the bridge and the namespaces.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from tests.support.processes import stop_processes

PREFIX4 = "10.77.0."
PREFIX6 = "fd00:77::"

# Runs inside a namespace: sends datagrams to (host, port) pairs given as arguments; with
# --echo, waits for each one's echo (retrying up to 5 times) so ARP/NDP are settled both ways.
# Prints the datagrams it sent over IPv4 and over IPv6, and the echoes it received. Fails if the kernel dropped any
# datagram silently (SndbufErrors), which would make the sent count wrong.
UDP_SENDER = r"""
import socket, sys
echo = sys.argv[1] == "--echo"
count, size = int(sys.argv[2]), int(sys.argv[3])
targets = sys.argv[4:]

def snd_errors():
    lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Udp:")]
    v4 = int(dict(zip(lines[0], lines[1]))["SndbufErrors"])
    v6 = sum(int(l.split()[1]) for l in open("/proc/net/snmp6") if l.startswith("Udp6SndbufErrors"))
    return v4 + v6

before = snd_errors()
sent = {socket.AF_INET: 0, socket.AF_INET6: 0}
received = 0
for target in targets:
    host, port = target.rsplit(":", 1)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    for i in range(count):
        payload = bytes([65 + i % 26]) * size
        for attempt in range(5 if echo else 1):
            s.sendto(payload, (host, int(port)))
            sent[family] += 1
            if not echo:
                break
            try:
                if s.recv(65536) == payload:
                    received += 1
                    break
            except socket.timeout:
                continue
        else:
            sys.exit(f"no echo from {target}")
    s.close()
if snd_errors() != before:
    sys.exit("the kernel dropped datagrams (SndbufErrors)")
print(sent[socket.AF_INET], sent[socket.AF_INET6], received)
"""

# Runs inside a namespace: a UDP echo server on a dual-stack socket.
UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(data, peer)
"""

# Runs inside a namespace: a TCP sink, accepting and closing.
TCP_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0", int(sys.argv[1])))
s.listen(512)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""

# Runs inside a namespace: a DNS server on a dual-stack UDP socket that answers A/AAAA
# questions from the JSON table {name: {"A": addr, "AAAA": addr}} and NXDOMAIN otherwise.
DNS_SERVER = r"""
import json, socket, struct, sys
records = json.loads(sys.argv[2])
TYPES = {1: ("A", socket.AF_INET), 28: ("AAAA", socket.AF_INET6)}
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
print("ready", flush=True)
while True:
    query, peer = s.recvfrom(4096)
    try:
        qid, flags = struct.unpack("!HH", query[:4])
        pos, labels = 12, []
        while query[pos]:
            labels.append(query[pos + 1 : pos + 1 + query[pos]].decode("ascii"))
            pos += 1 + query[pos]
        qtype = struct.unpack("!H", query[pos + 1 : pos + 3])[0]
        question = query[12 : pos + 5]
    except (IndexError, struct.error, UnicodeDecodeError):
        continue
    name = ".".join(labels).lower()
    answer, count = b"", 0
    kind, family = TYPES.get(qtype, ("", 0))
    if kind and kind in records.get(name, {}):
        rdata = socket.inet_pton(family, records[name][kind])
        answer, count = struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata, 1
    rcode = 0 if name in records else 3
    header = struct.pack("!HHHHHH", qid, 0x8480 | (flags & 0x0100) | rcode, 1, count, 0, 0)
    s.sendto(header + question + answer, peer)
"""

# Runs inside a namespace: writes the frames given as hex lines on stdin to eth0 as they are
# (AF_PACKET, SOCK_RAW), prints how many the kernel took.
RAW_SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
sent = 0
for line in sys.stdin.read().split():
    try:
        s.send(bytes.fromhex(line))
        sent += 1
    except OSError as e:
        print("refused", len(line) // 2, e, file=sys.stderr)
print(sent)
"""


def mac_tail(n: int = 3) -> str:
    """n random bytes of a MAC, after a vendor's OUI: "00:1b:21:" + mac_tail()."""
    return ":".join(f"{b:02x}" for b in os.urandom(n))


def randomized_mac() -> str:
    """A random locally administered unicast MAC, as a phone's privacy MAC is."""
    first = (secrets.randbits(8) & 0xFC) | 0x02
    return f"{first:02x}:" + mac_tail(5)


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


@dataclass(frozen=True)
class UdpSent:
    """What one run of the UDP sender put on the wire."""

    ipv4: int
    ipv6: int
    echoed: int
    size: int

    @property
    def packets(self) -> int:
        return self.ipv4 + self.ipv6

    @property
    def frame_bytes(self) -> int:
        """Bytes as the classifier counts them: the whole frame, Ethernet header included."""
        return self.ipv4 * (14 + 20 + 8 + self.size) + self.ipv6 * (14 + 40 + 8 + self.size)


@dataclass
class Node:
    """One namespace: a device (or a server) on the LAN."""

    name: str
    netns: str
    port: str  # the host-side veth: a bridge port netwatchd watches
    mac: str
    ipv4: str
    ipv6: str


@dataclass
class Lan:
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    nodes: Dict[str, Node] = field(default_factory=dict)
    procs: List[subprocess.Popen] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"nwb{self.suffix}"

    def create_bridge(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        _no_ipv6(self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def add_node(self, name: str, mac: str, down: bool = False) -> Node:
        """A device `name` with `mac`; with `down`, its eth0 stays down (unplugged: silent) until
        the test sets it up."""
        if not self.nodes:
            self.create_bridge()
        index = len(self.nodes) + 1
        node = Node(name, f"nwt{self.suffix}-{name}", f"nwv{self.suffix}{index}", mac,
                    f"{PREFIX4}{index}", f"{PREFIX6}{index}")
        self.nodes[name] = node
        sh("ip", "netns", "add", node.netns)
        self.ns(node, "ip", "link", "set", "lo", "up")
        self.plug(node)
        if down:
            self.ns(node, "ip", "link", "set", "eth0", "down")
        return node

    def plug(self, node: Node) -> None:
        """(Re)creates the node's veth pair, its addresses and its bridge port."""
        sh("ip", "link", "add", node.port, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
        _no_ipv6(node.port)
        sh("ip", "link", "set", node.port, "master", self.bridge)
        sh("ip", "link", "set", node.port, "up")
        self.ns(node, "ip", "link", "set", "eth0", "address", node.mac)
        self.ns(node, "ip", "addr", "add", f"{node.ipv4}/24", "dev", "eth0")
        self.ns(node, "ip", "-6", "addr", "add", f"{node.ipv6}/64", "dev", "eth0", "nodad")
        self.ns(node, "ip", "link", "set", "eth0", "up")

    def unplug(self, node: Node) -> None:
        sh("ip", "link", "del", node.port)  # takes the namespace's end with it

    def ports(self) -> List[str]:
        return [n.port for n in self.nodes.values()]

    def next_port(self, ahead: int = 0) -> str:
        """The bridge port the node added `ahead` nodes from now will have (to watch it before it exists)."""
        return f"nwv{self.suffix}{len(self.nodes) + ahead + 1}"

    # -- running things inside a node --------------------------------------------------------
    def ns(self, node: Node, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", node.netns, *argv, check=check, timeout=timeout)

    def python(self, node: Node, script: str, *args: str, stdin: str = "", timeout: float = 30) -> str:
        r = subprocess.run(["ip", "netns", "exec", node.netns, sys.executable, "-c", script, *args],
                           input=stdin, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"script in {node.name} failed: {r.stderr.strip()}")
        return r.stdout

    def start(self, node: Node, *argv: str, ready: Optional[str] = None, cwd: Optional[str] = None,
              log: Optional[Path] = None) -> subprocess.Popen:
        """A long-running process inside the node, stopped by pid in cleanup(). `ip netns exec`
        execs the command, so the pid is the command's. With `ready`, waits for that line."""
        with open(log or os.devnull, "ab") as err:  # the child keeps its own copy
            proc = subprocess.Popen(["ip", "netns", "exec", node.netns, *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE if ready else subprocess.DEVNULL, stderr=err, text=True)
        self.procs.append(proc)
        if ready is not None:
            line = proc.stdout.readline().strip()
            if line != ready:
                raise RuntimeError(f"{argv} in {node.name} did not start: {line!r}")
        return proc

    def wait_tcp(self, node: Node, port: int, timeout: float = 10) -> None:
        """Until something listens on `port` in the node (read from its /proc, no traffic)."""
        deadline = time.monotonic() + timeout
        want = f":{port:04X} "
        while time.monotonic() < deadline:
            out = self.ns(node, "cat", "/proc/net/tcp", "/proc/net/tcp6").stdout
            if any(want in line and line.split()[3] == "0A" for line in out.splitlines()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on port {port} in {node.name}")

    def send_udp(self, node: Node, targets: List[str], count: int, size: int = 32, echo: bool = False) -> "UdpSent":
        """`count` datagrams of `size` bytes to each target ('ip:port' or '[ip6]:port'); with
        `echo`, each one until its echo comes back."""
        out = self.python(node, UDP_SENDER, "--echo" if echo else "--plain", str(count), str(size), *targets)
        sent4, sent6, received = map(int, out.split())
        return UdpSent(sent4, sent6, received, size)

    def send_frames(self, node: Node, frames: List[bytes]) -> int:
        """Writes raw frames on the node's eth0; returns how many the kernel accepted."""
        return int(self.python(node, RAW_SENDER, stdin="\n".join(f.hex() for f in frames)))

    # -- teardown ----------------------------------------------------------------------------
    def cleanup(self) -> None:
        stop_processes(self.procs)
        for node in self.nodes.values():
            sh("ip", "link", "del", node.port, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        for node in self.nodes.values():
            sh("ip", "netns", "del", node.netns, check=False)

    def leftovers(self) -> List[str]:
        """Names of ours still present (for a test of the cleanup itself)."""
        links = sh("ip", "-o", "link", "show").stdout
        netns = sh("ip", "netns", "list").stdout
        return [n for n in [self.bridge, *self.ports()] if f" {n}:" in links or f" {n}@" in links] + \
               [n.netns for n in self.nodes.values() if n.netns in netns]


def _no_ipv6(ifname: str) -> None:
    """The host side of the LAN stays silent: no link-local address, no MLD, no RS."""
    Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1")
