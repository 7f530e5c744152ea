"""Which MAC each IP address belongs to, as ARP and NDP show it, and which it belonged to
before: a move is an address change, a move back to the previous owner a flip-flop."""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Optional

from netwatchd.devices.model import Device

log = logging.getLogger(__name__)


class AddressOwners:
    def __init__(self) -> None:
        self.owner: Dict[str, str] = {}
        self.previous: Dict[str, str] = {}

    def learn_from(self, devices: Iterable[Device]) -> None:
        """Owners from a loaded inventory: each address to the device that used it last."""
        latest: Dict[str, int] = {}
        for device in devices:
            for table in (device.ipv4, device.ipv6):
                for ip, seen in table.items():
                    if seen >= latest.get(ip, -1):
                        latest[ip], self.owner[ip] = seen, device.mac

    def claim(self, ip: str, mac: str) -> Optional[Dict[str, Any]]:
        """`mac` answers for `ip` now; the change (old and new MAC, flip-flop) if it moved."""
        old = self.owner.get(ip)
        self.owner[ip] = mac
        if old is None or old == mac:
            return None
        flip = self.previous.get(ip) == mac
        self.previous[ip] = old
        log.warning("%s %s: %s -> %s", ip, "flip-flopped" if flip else "changed MAC", old, mac)
        return {"ip": ip, "old_mac": old, "new_mac": mac, "flip_flop": flip}
