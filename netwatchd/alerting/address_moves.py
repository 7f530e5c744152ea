"""A device that changes its MAC but keeps its IP is one address_change (pure).

What the wire shows of it arrives in any order and across tick boundaries: the new MAC's first
frames may be an MLD report or NDP (modern systems on link-up), DHCP, an IPv6 RA, or the ARP
that shows its IPv4 address moved. Reported as they come, the first would be a new_device and
the ARP a tick later an address_change -- two alerts for one event, decided by timing. So:

  - a new MAC is held for one tick before it is reported as new_device; if, in the tick it was
    first seen or the next, an address moves to it, it is that address changing hands
    (arpwatch's "changed ethernet address"), never also a new device;
  - a new MAC seen by IPv6 alone (its fact says `ipv6_only`: IPv6 frames, no ARP or IPv4 yet)
    is held IPV6_FIRST_HOLD_SEC of the observations' own time instead, however short the tick:
    on link-up, MLD and NDP often come seconds before DHCP and the ARP that shows the IPv4
    address moving, and ticks are a setting (compressed in tests) while that delay is not. A MAC
    first seen by ARP or IPv4 is decided a tick later, as before (its latency does not grow), and
    so is a held one as soon as its first IPv4 address shows without moving from another MAC
    (TickObservation.devices_ipv4_shown): then it is new;
  - an address move seen only over IPv6 is held IPV6_FIRST_HOLD_SEC too, so that the IPv4 move
    of the same MAC change (the address users know the device by) names the alert when it
    follows;
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
from typing import Any, Dict, Iterable, List, Tuple

import numpy as np

Change = Dict[str, Any]  # {"ip", "old_mac", "new_mac", "flip_flop"}

# How long a new MAC seen by IPv6 alone waits for its IPv4 address to move to it: on link-up the
# IPv4 (DHCP, then ARP) follows the first MLD/NDP frames by 1.5-2 s (the case of issue 10's note,
# and tests/integration/test_mac_change_ipv6_first.py's); 4 s covers that with a tick of slack,
# under the 5 s issue 23 allows.
IPV6_FIRST_HOLD_SEC = 4


def is_ipv4(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 4
    except ValueError:
        return False


def pair_of(change: Change) -> Tuple[str, str]:
    return change["old_mac"], change["new_mac"]


class AddressMoves:
    def __init__(self) -> None:
        self.pending_new: List[Dict[str, Any]] = []  # new devices of the last tick (+ "seen_usec")
        self.held_changes: List[Change] = []  # IPv6-only moves, each held since "held_usec"

    def step(self, time_usec: int, new_devices: List[Dict[str, Any]], changes: List[Change],
             ipv4_shown: Iterable[str] = ()) -> Tuple[List[Dict[str, Any]], List[List[Change]]]:
        """One tick: (new devices to report now, each with "seen_usec"; groups of moves to
        report now, each group one alert). `ipv4_shown`: MACs whose first IPv4 address showed
        this tick without moving from another MAC -- a MAC held for its IPv4 is new after all."""
        took_over = {c["new_mac"] for c in changes}
        shown = set(ipv4_shown)
        waiting = [d for d in self.pending_new if d["mac"] not in took_over]
        waits = [d["mac"] not in shown and self._waits_for_ipv4(d, time_usec) for d in waiting]
        ready = [d for d, wait in zip(waiting, waits) if not wait]
        still = [d for d, wait in zip(waiting, waits) if wait]
        self.pending_new = still + [dict(d, seen_usec=time_usec) for d in new_devices if d["mac"] not in took_over]
        hold_usec = IPV6_FIRST_HOLD_SEC * 1_000_000
        # when each held pair was first held (a state saved before held_usec existed: release now)
        held_since = {}
        for change in self.held_changes:
            held_since.setdefault(pair_of(change), change.get("held_usec", time_usec - hold_usec))
        groups: Dict[Tuple[str, str], List[Change]] = {}
        held = [{k: v for k, v in c.items() if k != "held_usec"} for c in self.held_changes]  # few: IPv6 only
        for change in held + list(changes):  # this tick's as they came: a flood's thousands are not copied
            groups.setdefault(pair_of(change), []).append(change)
        report, hold = [], []
        for pair, group in groups.items():
            since = held_since.get(pair, time_usec)
            if any(is_ipv4(c["ip"]) for c in group) or time_usec - since >= hold_usec:
                report.append(sorted(group, key=lambda c: not is_ipv4(c["ip"])))  # IPv4 first, stable
            else:
                hold += [dict(c, held_usec=since) for c in group]
        self.held_changes = hold
        return ready, report

    @staticmethod
    def _waits_for_ipv4(device: Dict[str, Any], time_usec: int) -> bool:
        return bool(device.get("ipv6_only")) and time_usec - device["seen_usec"] < IPV6_FIRST_HOLD_SEC * 1_000_000

    # -- persistence -----------------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        return {"moves.pending_new": np.asarray([json.dumps(d, sort_keys=True) for d in self.pending_new], dtype=str),
                "moves.held_changes": np.asarray([json.dumps(c, sort_keys=True) for c in self.held_changes], dtype=str)}

    def load_state(self, state: Dict[str, np.ndarray]) -> None:
        if "moves.pending_new" in state:
            self.pending_new = [json.loads(str(s)) for s in state["moves.pending_new"]]
        if "moves.held_changes" in state:
            self.held_changes = [json.loads(str(s)) for s in state["moves.held_changes"]]
