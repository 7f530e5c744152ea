"""Which MAC each IP address belongs to, as ARP and NDP show it, and which it belonged to
before: a move is an address change, a move back to the previous owner a flip-flop.

Any device can claim any address (an ARP flood cycling through a subnet claims thousands), so
both tables are bounded: at most MAX_OWNED addresses, the least recently claimed forgotten
first, and a device that leaves the inventory takes its claims with it (`forget`). A move is a
debug line, not a warning: the alert it becomes is what an operator reads, and a flood of moves
must not crowd alerts out of journald's rate limit (activity_log.py says how many there were).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Dict, Iterable, Optional, Set

from netwatchd.devices.model import Device

log = logging.getLogger(__name__)

MAX_OWNED = 65536  # addresses whose owner is remembered (16 per device at the default max_devices)


class AddressOwners:
    def __init__(self, capacity: int = MAX_OWNED) -> None:
        self.capacity = capacity
        self.owner: "OrderedDict[str, str]" = OrderedDict()  # address -> MAC, least recently claimed first
        self.previous: Dict[str, str] = {}  # address -> the MAC before (only for addresses in `owner`)
        self._owned: Dict[str, Set[str]] = {}  # MAC -> the addresses it owns (forget without a scan)

    def __len__(self) -> int:
        return len(self.owner)

    def learn_from(self, devices: Iterable[Device]) -> None:
        """Owners from a loaded inventory: each address to the device that used it last."""
        latest: Dict[str, int] = {}
        owner: Dict[str, str] = {}
        for device in devices:
            for table in (device.ipv4, device.ipv6):
                for ip, seen in table.items():
                    if seen >= latest.get(ip, -1):
                        latest[ip], owner[ip] = seen, device.mac
        for ip in sorted(owner, key=latest.get)[-self.capacity:]:
            self._set(ip, owner[ip])

    def claim(self, ip: str, mac: str) -> Optional[Dict[str, Any]]:
        """`mac` answers for `ip` now; the change (old and new MAC, flip-flop) if it moved."""
        old = self.owner.get(ip)
        self._set(ip, mac)
        while len(self.owner) > self.capacity:
            gone, gone_owner = self.owner.popitem(last=False)
            self._disown(gone, gone_owner)
            self.previous.pop(gone, None)
        if old is None or old == mac:
            return None
        flip = self.previous.get(ip) == mac
        self.previous[ip] = old
        log.debug("%s %s: %s -> %s", ip, "flip-flopped" if flip else "changed MAC", old, mac)
        return {"ip": ip, "old_mac": old, "new_mac": mac, "flip_flop": flip}

    def forget(self, mac: str) -> None:
        """`mac` left the inventory: the addresses it owned have no owner now (a device that
        claims one later is new there, not a move from a device nobody remembers)."""
        for ip in self._owned.pop(mac, ()):
            del self.owner[ip]
            self.previous.pop(ip, None)

    def _set(self, ip: str, mac: str) -> None:
        old = self.owner.pop(ip, None)
        if old is not None:
            self._disown(ip, old)
        self.owner[ip] = mac
        self._owned.setdefault(mac, set()).add(ip)

    def _disown(self, ip: str, mac: str) -> None:
        owned = self._owned.get(mac)
        if owned is not None:
            owned.discard(ip)
            if not owned:
                del self._owned[mac]
