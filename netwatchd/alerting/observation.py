"""What one tick saw (pure): the detector's input, and what the replay history records."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List

from netwatchd.start_columns import StartColumns


@dataclass
class TickObservation:
    time_usec: int
    device_connects: Dict[str, int] = field(default_factory=dict)  # mac -> SYNs sent this tick
    device_new_peers: Dict[str, int] = field(default_factory=dict)  # mac -> first-seen peers
    device_new_ports: Dict[str, int] = field(default_factory=dict)  # mac -> first-seen ports
    command_connects: Dict[str, int] = field(default_factory=dict)  # command -> connect() calls
    command_failed: Dict[str, int] = field(default_factory=dict)  # command -> failed ones
    command_pids: Dict[str, List[int]] = field(default_factory=dict)  # command -> pids that did it
    # {"mac", "randomized", "vendor", "interface", "ipv4", "ipv6"}
    new_devices: List[Dict[str, Any]] = field(default_factory=list)
    # devices that kept talking (sent frames in a second tick), once each, as new_devices
    # entries: a MAC first seen in a MAC flood that does is a real device after all
    # (alerting/mac_flood.py)
    devices_confirmed: List[Dict[str, Any]] = field(default_factory=list)
    # {"ip", "old_mac", "new_mac", "flip_flop"}
    address_changes: List[Dict[str, Any]] = field(default_factory=list)
    # devices whose first IPv4 address showed this tick: a new MAC first seen by IPv6 alone is
    # then decided at once, new or an address move (alerting/address_moves.py)
    devices_ipv4_shown: List[str] = field(default_factory=list)
    # connection starts per pair, for beacons: [source ("device:<mac>"; in histories written
    # before command_starts, "command:<name>" too), destination address, port, DNS/TLS name or "",
    # [start times, usec]]: the devices' few, as lists
    connection_starts: List[List[Any]] = field(default_factory=list)
    # the commands' connection starts, for beacons: one row per start, as numpy columns
    # (netwatchd/start_columns.py; a busy host's tick holds 100k), the history keeps them as a few
    # base64 columns (StartColumns.to_json_value)
    command_starts: StartColumns = field(default_factory=StartColumns.empty)
    # per device, the (host, port, transport) pairs it probed first this tick (TCP SYNs, UDP
    # from a client port; netwatchd/devices/probes.py): the slow-scan windows' input
    device_probes: Dict[str, List[List[Any]]] = field(default_factory=dict)
    # DNS per device, for alerting/dns_anomalies.py (devices/dns_tally.py, at most 64 domains a
    # device): mac -> {"nxdomain": {registered domain: NXDOMAIN answers to its own questions},
    # "names": {registered domain: [distinct names asked, tunnel-like ones, longest label]},
    # "nxdomain_over", "names_over": answers and names under domains beyond the 64}
    dns_activity: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # DHCP OFFERs and ACKs devices sent (the frame's source MAC is the server), one per (server,
    # interface, vlan, router, dns) a tick, at most 64 (devices/app_metadata.py): {"server_mac",
    # "server_ip", "interface", "vlan", "router", "dns": [...], "message_type"}
    dhcp_replies: List[Dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        # the fields are JSON's own types already but command_starts (its to_json_value): no
        # asdict(), whose deep copy of every start of a busy tick (100k pairs) cost more than
        # all the rest of the tick; empty fields are left out, so a tick without command_starts
        # is written as before they were
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data = {k: v for k, v in data.items() if v}  # (StartColumns: false when it has no row)
        if "command_starts" in data:
            data["command_starts"] = self.command_starts.to_json_value()
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TickObservation":
        """A tick as to_json() wrote it, or as versions before command_starts did (no such key)."""
        data = json.loads(text)
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "command_starts" in data:
            data["command_starts"] = StartColumns.from_json_value(data["command_starts"])
        return cls(**data)
