"""A device that changes its MAC but keeps its IP is one address_change (pure).

What the wire shows of it arrives in any order and across tick boundaries: the new MAC's first
frames may be an MLD report or NDP (modern systems on link-up), DHCP, an IPv6 RA, or the ARP
that shows its IPv4 address moved. Reported as they come, the first would be a new_device and
the ARP a tick later an address_change -- two alerts for one event, decided by timing. So:

  - a new MAC is held for one tick before it is reported as new_device; if, in the tick it was
    first seen or the next, an address moves to it, it is that address changing hands
    (arpwatch's "changed ethernet address"), never also a new device;
  - an address move seen only over IPv6 is held one tick too, so that the IPv4 move of the
    same MAC change (the address users know the device by) names the alert when it follows;
  - all moves from one old MAC to one new MAC in a tick are one group, one alert: its subject is
    the first IPv4 address that moved (else the first IPv6 one), the others are in `other_ips`.
The detector adds a cooldown on the (old MAC, new MAC) pair so a move noticed later on another
address of the same change is not a second alert.

Everything held is in the detector's saved state, so a restart in between loses nothing, and a
replay over recorded ticks makes the same decisions at the same ticks.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Any, Dict, List, Tuple

import numpy as np

Change = Dict[str, Any]  # {"ip", "old_mac", "new_mac", "flip_flop"}


def is_ipv4(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 4
    except ValueError:
        return False


class AddressMoves:
    def __init__(self) -> None:
        self.pending_new: List[Dict[str, Any]] = []  # new devices of the last tick (+ "seen_usec")
        self.held_changes: List[Change] = []  # IPv6-only moves of the last tick

    def step(self, time_usec: int, new_devices: List[Dict[str, Any]],
             changes: List[Change]) -> Tuple[List[Dict[str, Any]], List[List[Change]]]:
        """One tick: (new devices to report now, each with "seen_usec"; groups of moves to
        report now, each group one alert)."""
        took_over = {c["new_mac"] for c in changes}
        ready = [d for d in self.pending_new if d["mac"] not in took_over]
        self.pending_new = [dict(d, seen_usec=time_usec) for d in new_devices if d["mac"] not in took_over]
        groups: Dict[Tuple[str, str], List[Change]] = {}
        for change in self.held_changes + list(changes):
            groups.setdefault((change["old_mac"], change["new_mac"]), []).append(change)
        held_pairs = {(c["old_mac"], c["new_mac"]) for c in self.held_changes}
        report, hold = [], []
        for pair, group in groups.items():
            if pair in held_pairs or any(is_ipv4(c["ip"]) for c in group):
                report.append(sorted(group, key=lambda c: not is_ipv4(c["ip"])))  # IPv4 first, stable
            else:
                hold += group
        self.held_changes = hold
        return ready, report

    # -- persistence -----------------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        return {"moves.pending_new": np.asarray([json.dumps(d, sort_keys=True) for d in self.pending_new], dtype=str),
                "moves.held_changes": np.asarray([json.dumps(c, sort_keys=True) for c in self.held_changes], dtype=str)}

    def load_state(self, state: Dict[str, np.ndarray]) -> None:
        if "moves.pending_new" in state:
            self.pending_new = [json.loads(str(s)) for s in state["moves.pending_new"]]
        if "moves.held_changes" in state:
            self.held_changes = [json.loads(str(s)) for s in state["moves.held_changes"]]
