"""Which devices use an address (pure): an index, so that a DNS answer or a lookup by IP finds
its device without looking at every device (thousands of them, for every answer of a flood)."""
from __future__ import annotations

from typing import Dict, Iterable, List, Set

from netwatchd.devices.model import Device


class AddressIndex:
    def __init__(self) -> None:
        self._macs: Dict[str, Set[str]] = {}

    def __len__(self) -> int:
        return len(self._macs)

    def add(self, address: str, mac: str) -> None:
        self._macs.setdefault(address, set()).add(mac)

    def remove(self, address: str, mac: str) -> None:
        macs = self._macs.get(address)
        if macs is not None:
            macs.discard(mac)
            if not macs:
                del self._macs[address]

    def add_device(self, device: Device) -> None:
        for address in list(device.ipv4) + list(device.ipv6):
            self.add(address, device.mac)

    def remove_device(self, device: Device) -> None:
        for address in list(device.ipv4) + list(device.ipv6):
            self.remove(address, device.mac)

    def macs(self, address: str) -> Iterable[str]:
        return sorted(self._macs.get(address, ()))

    @classmethod
    def of(cls, devices: Iterable[Device]) -> "AddressIndex":
        index = cls()
        for device in devices:
            index.add_device(device)
        return index


def owners(index: AddressIndex, devices: Dict[str, Device], address: str) -> List[Device]:
    return [devices[mac] for mac in index.macs(address) if mac in devices]
