"""Who this host is to a fleet: its host id and, per watched interface, the L2 segment's id.

The host id is /etc/machine-id (fleet.host_id overrides it), not the hostname: two hosts cloned
from one image keep one hostname (systemd gives each its own machine-id on first boot), and a
rename would split one host's alerts in two.

The segment must come out alike on every host of one LAN without their talking to each other, so
that N observers of one device post one alert: the interface's IPv4 prefix (its on-link route)
and its gateway's MAC ("192.168.1.0/24@52:54:00:12:34:56"). The prefix alone repeats across sites
(every home is 192.168.1.0/24); the gateway's MAC does not. Without a gateway on the interface the
prefix alone is the id; without an IPv4 prefix the interface is this host's own ("<host>/<ifname>":
never merged with another's). fleet.segment overrides all of it.

`parse_routes` and `parse_arp` read /proc/net/route and /proc/net/arp's text (tests feed
fixtures); `read_identity` is the one place that opens the files. Both files are per network
namespace: a container computes its own LAN's segment.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from netwatchd.interfaces import SYS_NET
from netwatchd.read_model import HostIdentity

log = logging.getLogger(__name__)

MACHINE_ID = "/etc/machine-id"
ROUTES = "/proc/net/route"
ARP = "/proc/net/arp"
RTF_GATEWAY = 0x2
ATF_COM = 0x2  # the neighbour's MAC is known (a reachable or stale entry)


class Route(NamedTuple):
    interface: str
    network: ipaddress.IPv4Network
    gateway: Optional[str]  # None for an on-link route


def _address(hex_le: str) -> str:
    return socket.inet_ntoa(struct.pack("<I", int(hex_le, 16)))


def parse_routes(text: str) -> List[Route]:
    """/proc/net/route's IPv4 routes; lines that do not parse are skipped."""
    routes = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        try:
            destination, gateway, flags, mask = _address(cols[1]), _address(cols[2]), int(cols[3], 16), _address(cols[7])
            network = ipaddress.IPv4Network(f"{destination}/{mask}", strict=False)
        except (ValueError, struct.error):
            continue
        routes.append(Route(cols[0], network, gateway if flags & RTF_GATEWAY else None))
    return routes


def parse_arp(text: str) -> Dict[Tuple[str, str], str]:
    """(IPv4 address, interface) -> MAC of the complete entries in /proc/net/arp."""
    table = {}
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 6:
            continue
        try:
            complete = int(cols[2], 16) & ATF_COM
        except ValueError:
            continue
        if complete and cols[3] != "00:00:00:00:00:00":
            table[(cols[0], cols[5])] = cols[3].lower()
    return table


def segment_of(interface: str, host: str, routes: Sequence[Route], arp: Dict[Tuple[str, str], str],
               master: str = "") -> str:
    """The segment id of `interface` (see the module's docstring). A bridge port carries no
    address: its bridge (`master`) does, and that is the segment's."""
    if master and not any(r.interface == interface for r in routes):
        interface = master
    on_link = [r.network for r in routes if r.interface == interface and r.gateway is None
               and 0 < r.network.prefixlen < 32]
    if not on_link:
        return f"{host}/{interface}"
    prefix = max(on_link, key=lambda n: n.prefixlen)  # the LAN's own route, not a wider summary
    gateways = sorted((r.network.prefixlen, r.gateway) for r in routes if r.interface == interface and r.gateway)
    if not gateways:
        return str(prefix)
    mac = arp.get((gateways[0][1], interface))  # the default route (prefix length 0) first
    return f"{prefix}@{mac}" if mac else str(prefix)


def master_of(interface: str, sys_net: str = SYS_NET) -> str:
    """The bridge (or bond) `interface` is a port of, or ''."""
    try:
        return os.path.basename(os.readlink(os.path.join(sys_net, interface, "master")))
    except OSError:
        return ""


def read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError as e:
        log.debug("cannot read %s: %s", path, e)
        return ""


class IdentityReader:
    """Reads the identity; says once in the log what it could not read (a missing machine-id, a
    gateway whose MAC is not known yet), and again only when that changes.

    A gateway's MAC, once known, is kept when its neighbour entry goes (the kernel forgets idle
    ones): the segment must not change under the hosts' feet, or one device would become two
    alerts. A new MAC in the neighbour table (the router replaced) replaces it. Before the kernel
    has an entry, `neighbour(ip)` (the device inventory: the gateway talks on the LAN too) may
    know it."""

    def __init__(self, machine_id: str = MACHINE_ID, routes: str = ROUTES, arp: str = ARP, sys_net: str = SYS_NET,
                 neighbour: Callable[[str], str] = lambda ip: ""):
        self.paths = (machine_id, routes, arp)
        self.sys_net = sys_net
        self.neighbour = neighbour
        self._said: Dict[str, str] = {}
        self._gateways: Dict[Tuple[str, str], str] = {}  # (gateway IPv4, interface) -> MAC last known

    def _gateway_macs(self, routes: Sequence[Route], arp: Dict[Tuple[str, str], str]) -> Dict[Tuple[str, str], str]:
        known = dict(arp)
        for r in routes:
            key = (r.gateway, r.interface)
            if not r.gateway:
                continue
            mac = arp.get(key) or self._gateways.get(key) or self.neighbour(r.gateway)
            if mac:
                known[key] = self._gateways[key] = mac.lower()
        return known

    def read(self, interfaces: Sequence[str], host_id: str = "", segment: str = "") -> HostIdentity:
        machine_id, routes_path, arp_path = self.paths
        host = host_id or read_text(machine_id).strip()
        if not host:
            host = socket.gethostname()
            self._once("host", f"{machine_id} is empty or unreadable: host id is the hostname {host!r} "
                               "(set fleet.host_id)")
        if segment:
            segments = tuple((name, segment) for name in interfaces)
        else:
            routes = parse_routes(read_text(routes_path))
            arp = self._gateway_macs(routes, parse_arp(read_text(arp_path)))
            segments = tuple((name, segment_of(name, host, routes, arp, master_of(name, self.sys_net)))
                             for name in interfaces)
            for name, seg in segments:
                if "@" not in seg:
                    self._once(f"segment {name}", f"segment of {name} is {seg!r}: no gateway MAC known "
                                                  "there (yet); set fleet.segment if hosts disagree")
        return HostIdentity(host=host, hostname=socket.gethostname(), segments=segments)

    def _once(self, key: str, message: str) -> None:
        if self._said.get(key) != message:
            self._said[key] = message
            log.info("fleet identity: %s", message)
