"""A tick's probes (pure): the (destination host, port) pairs each device reached for the first
time, for the windowed scan counts (netwatchd/alerting/scan_windows.py).

The TC classifier reports a device's first-seen (peer, port, transport) patterns; a probe is one
that a scanner's packet makes and a service's reply does not:
- a TCP pattern is a SYN without ACK (the classifier reports no other), a connection attempt;
- a UDP pattern counts when its source port is not below its destination port: a client sends
  from a high (ephemeral) port to a service's lower one, as `nmap -sU` does, while a DNS or NTP
  server answering clients writes from its low port to theirs, which would make every busy
  server look like it scanned its clients' ephemeral ports;
- multicast and broadcast destinations (mDNS, SSDP, DHCP) are not a host anyone scans;
- an ARP request's target or an ICMP/ICMPv6 echo request's destination (SWEEPS, port 0) is an
  address asked for: it counts only when no known device uses that address (the monitor checks:
  a device asking for its gateway or a peer that answered before is using the LAN, one asking
  for a /24 of addresses nobody holds is sweeping it).

Bounded: at most MAX_PROBES_PER_TICK per device per tick (a tick of more is a fan_out burst
anyway); the rest are counted (`dropped`, Dropped `device_probes_dropped`).
"""
from __future__ import annotations

import ipaddress
from typing import Any, Dict, List

MAX_PROBES_PER_TICK = 512  # per device
SWEEPS = ("arp", "icmp", "icmpv6")  # the transports of addresses asked for (ARP, echo requests)


def is_probe(transport: str, address: str, sport: int, dport: int) -> bool:
    """A first-seen pattern that a scan makes (above): TCP SYNs, UDP from a port not below the
    destination port, to a unicast address."""
    if transport == "udp" and sport < dport:
        return False
    if transport not in ("tcp", "udp") + SWEEPS:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_multicast or ip.is_unspecified or address == "255.255.255.255")


class TickProbes:
    """This tick's probes per device: {mac: [[host, port, transport], ...]}, bounded."""

    def __init__(self):
        self.by_device: Dict[str, List[List[Any]]] = {}
        self.dropped = 0  # probes beyond MAX_PROBES_PER_TICK of a device in a tick

    def add(self, mac: str, transport: str, address: str, sport: int, dport: int) -> None:
        if not is_probe(transport, address, sport, dport):
            return
        probes = self.by_device.setdefault(mac, [])
        if len(probes) >= MAX_PROBES_PER_TICK:
            self.dropped += 1
            return
        probes.append([address, dport, transport])

    def take(self) -> Dict[str, List[List[Any]]]:
        taken, self.by_device = self.by_device, {}
        return taken
