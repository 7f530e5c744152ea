"""Questions about the inventory, and a device's answer shape (D-Bus, HTTP, netwatchctl).
Read-only: nothing here changes a device."""
from __future__ import annotations

import ipaddress
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from netwatchd.devices.model import PROTOCOLS, Device, normalize_mac
from netwatchd.errors import InvalidQuery, NoSuchDevice


def list_devices(devices: Iterable[Device]) -> List[Device]:
    """By first seen, then MAC: a fixed order, across restarts too (ListDevicesPage pages it)."""
    return sorted(devices, key=lambda d: (d.first_seen_usec, d.mac))


def find_device(devices: Mapping[str, Device], mac_or_ip: str,
                owners_of: Optional[Callable[[str], List[Device]]] = None) -> Device:
    """The device with this MAC, or the one that used this IP address last; `owners_of(ip)`,
    an address index, spares looking at every device."""
    try:
        mac = normalize_mac(mac_or_ip)
    except ValueError:
        mac = None
    if mac is not None:
        if mac in devices:
            return devices[mac]
        raise NoSuchDevice(f"no device with MAC {mac} has been seen")
    try:
        ip = str(ipaddress.ip_address(mac_or_ip.strip()))
    except ValueError:
        raise InvalidQuery(f"{mac_or_ip!r} is neither a MAC address nor an IP address") from None
    owners = owners_of(ip) if owners_of else [d for d in devices.values() if ip in d.ipv4 or ip in d.ipv6]
    if not owners:
        raise NoSuchDevice(f"no device with address {ip} has been seen")
    return max(owners, key=lambda d: (d.ipv4.get(ip) or d.ipv6.get(ip) or 0))


def protocol_totals(devices: Iterable[Device]) -> Dict[str, int]:
    """Packets per protocol over every device, both directions (for `netwatchctl status`)."""
    totals = {p: 0 for p in PROTOCOLS}
    for device in devices:
        for p in PROTOCOLS:
            totals[p] += device.counters.get(f"tx_{p}_packets", 0) + device.counters.get(f"rx_{p}_packets", 0)
    return totals


def device_answer(device: Device) -> Dict[str, Any]:
    """A device as GetDevice and `netwatchctl device` show it: its summary and its name lists."""
    return {
        **device_summary(device),
        "dns_names": sorted(device.dns_names),
        "http_hosts": sorted(device.http_hosts),
        "tls_names": sorted(device.tls_names),
        "http_requests": [[r["method"], r["host"], r["path"]] for r in device.http_requests],
        "recent_peers": [[p["address"], p["port"], p["transport"], p["name"]] for p in device.recent_peers],
    }


# The lists a device's summary leaves out: each up to a few KiB a device, so that 4096 devices
# of them could not go out as one D-Bus message. GetDevice (device_answer) has them.
SUMMARY_LEAVES_OUT = ("dns_names", "http_hosts", "tls_names", "http_requests", "recent_peers")


def device_summary(device: Device) -> Dict[str, Any]:
    """A device as ListDevices / ListDevicesPage show it: device_answer's fields but its name
    lists (SUMMARY_LEAVES_OUT), and whether it is confirmed. Its size is bounded (addresses,
    counters and short strings), whatever the device sent."""
    return {
        "mac": device.mac,
        "vendor": device.vendor,
        "randomized": device.randomized,
        "confirmed": device.confirmed,
        "hostname": device.hostname,
        "hostname_source": device.hostname_source,
        "first_seen_usec": device.first_seen_usec,
        "last_seen_usec": device.last_seen_usec,
        "interface": device.interface,
        "vlan": device.vlan,
        "ipv4": sorted(device.ipv4),
        "ipv6": sorted(device.ipv6),
        "counters": dict(device.counters),
        "tcp_syns": device.counters.get("tcp_syns", 0),
        "peers": device.peers,
    }
