"""The benchmark LAN of bench/device_bench.py: a bridge with device and sink namespaces on veth
pairs, and a direct veth into the host; named by this process's id, removed by name."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]



SUBNET = "10.213.7"  # inside the namespaces only
SUBNET_DIRECT = "10.213.8"




# -- the link ---------------------------------------------------------------------------------
def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r


@dataclass
class Station:
    """A namespace on the link: its veth (eth0 inside) and the host side of the pair (`port`)."""
    label: str
    netns: str
    port: str  # host side of the veth pair: a bridge port, or a plain interface (direct)
    mac: str
    ip: str
    bridged: bool = True
    dst_ip: str = ""  # where its senders send (static neighbour entry)
    dst_mac: str = ""
    ifindex: int = 0  # of the port, in the host namespace


class Link:
    def __init__(self, n_devices: int) -> None:
        tag = f"{os.getpid():x}"[-5:]
        self.tag = tag
        self.bridge = f"nwdb{tag}br"
        labels = [chr(ord("a") + i) for i in range(n_devices)]
        pid_bytes = os.getpid().to_bytes(4, "big")
        self.devices = [self._station(label, i + 1, pid_bytes) for i, label in enumerate(labels)]
        self.sink = self._station("s", 200, pid_bytes)
        for d in self.devices:
            d.dst_ip, d.dst_mac = self.sink.ip, self.sink.mac
        # the direct device: its own subnet, sending to an address whose MAC nobody has
        self.direct = self._station("d", 100, pid_bytes)
        self.direct.ip, self.direct.bridged = f"{SUBNET_DIRECT}.1", False
        self.direct.dst_ip = f"{SUBNET_DIRECT}.254"
        self.direct.dst_mac = self._station("x", 254, pid_bytes).mac
        self.created_netns: List[str] = []
        self.created_links: List[str] = []

    def _station(self, label: str, n: int, pid_bytes: bytes) -> Station:
        # locally administered unicast MACs: 02:6e:PID:PID:PID:n
        mac = "02:6e:" + ":".join(f"{b:02x}" for b in pid_bytes[1:]) + f":{n:02x}"
        return Station(label, f"nwdbench-{self.tag}-{label}", f"nwdb{self.tag}{label}", mac, f"{SUBNET}.{n}")

    @property
    def stations(self) -> List[Station]:
        return self.devices + [self.sink, self.direct]

    @property
    def senders(self) -> List[Station]:
        return self.devices + [self.direct]

    @property
    def unused_name(self) -> str:
        """An interface name that does not exist: the `interfaces` setting that detaches us."""
        return f"nwdb{self.tag}off"

    def up(self) -> "Link":
        for name in [self.bridge] + [s.port for s in self.stations]:
            if os.path.exists(f"/sys/class/net/{name}"):
                raise RuntimeError(f"interface {name} exists already")
        sh("ip", "link", "add", self.bridge, "type", "bridge", "stp_state", "0")
        self.created_links.append(self.bridge)
        _no_ipv6(self.bridge)
        for s in self.stations:
            sh("ip", "netns", "add", s.netns)
            self.created_netns.append(s.netns)
            sh("ip", "netns", "exec", s.netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
            sh("ip", "link", "add", s.port, "type", "veth", "peer", "name", "eth0", "address", s.mac,
               "netns", s.netns)
            self.created_links.append(s.port)
            _no_ipv6(s.port)
            if s.bridged:
                sh("ip", "link", "set", s.port, "master", self.bridge)
            sh("ip", "link", "set", s.port, "up")
            sh("ip", "-n", s.netns, "link", "set", "lo", "up")
            sh("ip", "-n", s.netns, "addr", "add", f"{s.ip}/24", "dev", "eth0")
            sh("ip", "-n", s.netns, "link", "set", "eth0", "up")
            with open(f"/sys/class/net/{s.port}/ifindex") as f:
                s.ifindex = int(f.read())
        sh("ip", "link", "set", self.bridge, "up")
        # static: no ARP on the link, no flooding of the sink's frames to the other ports
        sh("bridge", "fdb", "replace", self.sink.mac, "dev", self.sink.port, "master", "static")
        for d in self.senders:
            sh("ip", "-n", d.netns, "neigh", "replace", d.dst_ip, "lladdr", d.dst_mac, "dev", "eth0", "nud",
               "permanent")
        return self

    def down(self) -> None:
        for netns in reversed(self.created_netns):  # takes the veth pair with it
            sh("ip", "netns", "del", netns, check=False)
        for name in reversed(self.created_links):
            if os.path.exists(f"/sys/class/net/{name}"):
                sh("ip", "link", "del", name, check=False)
        self.created_netns, self.created_links = [], []

    def __enter__(self) -> "Link":
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc) -> None:
        self.down()

    def drops(self) -> Dict[str, int]:
        """Where a frame a device sent could be lost before our ingress hook: the sending veth
        (tx_dropped), the host port (rx_dropped) and the per-CPU backlog (softnet_stat)."""
        out = {"softnet_backlog": softnet_dropped()}
        for d in self.senders:
            inner = link_stats(d.netns, "eth0")
            outer = link_stats(None, d.port)
            out[f"{d.label}_veth_tx_dropped"] = inner["tx"]["dropped"]
            out[f"{d.label}_port_rx_dropped"] = outer["rx"]["dropped"]
        return out


def _no_ipv6(ifname: str) -> None:
    path = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
    if os.path.exists(path):
        with open(path, "w") as f:
            f.write("1")


def link_stats(netns: Optional[str], ifname: str) -> Dict:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-s", "-j", "link", "show", ifname]
    return json.loads(sh(*cmd).stdout)[0]["stats64"]


def softnet_dropped() -> int:
    """Frames dropped because a CPU's backlog was full (second column of softnet_stat)."""
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f)


