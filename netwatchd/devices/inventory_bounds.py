"""Which devices leave the inventory (pure): the policy that keeps it bounded under a flood.

Any device on the LAN can write any source MAC, so the inventory (devices.max_devices) is a
table an adversary can try to fill. When it is over its bound, devices go in this order:
  1. unconfirmed ones (never "kept talking": one forged frame makes such a MAC), idle longest first;
  2. this tick's new ones (still unconfirmed; after the older unconfirmed, newest kept last):
     a flood bigger than the whole inventory drops its own MACs, not known devices;
  3. confirmed devices, idle longest first -- only when the inventory is full of them, which a
     flood cannot cause (the operator's LAN is bigger than devices.max_devices).
Every eviction is counted by the caller; a device evicted while new this tick is still reported
in this tick's observation, so dropping never hides a new device.

And by age: a device idle longer than devices.expire_after_sec is forgotten, an unconfirmed one
after devices.unconfirmed_expire_sec (it is new again if it comes back).
"""
from __future__ import annotations

from typing import Collection, Dict, List

from netwatchd.devices.model import Device


def evictions(devices: Dict[str, Device], capacity: int, new_this_tick: Collection[str]) -> List[str]:
    """MACs to drop so that at most `capacity` devices stay, in the order above."""
    excess = len(devices) - capacity
    if excess <= 0:
        return []
    order = sorted(devices.values(),
                   key=lambda d: (d.confirmed, d.mac in new_this_tick, d.last_seen_usec, d.first_seen_usec, d.mac))
    return [d.mac for d in order[:excess]]


def expired(devices: Dict[str, Device], now_usec: int, expire_usec: int, unconfirmed_expire_usec: int) -> List[str]:
    """MACs idle longer than their kind's limit."""
    return [d.mac for d in devices.values()
            if now_usec - d.last_seen_usec > (expire_usec if d.confirmed else unconfirmed_expire_usec)]
