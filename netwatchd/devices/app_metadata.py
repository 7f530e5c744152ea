"""What devices' DNS, DHCP, HTTP and TLS snippets say about them: names looked up, hostnames,
addresses asked for, HTTP hosts and requests, TLS server names. Only metadata is kept."""
from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any, Dict, List

from netwatchd.devices import app_parsers
from netwatchd.devices.model import MAX_HTTP_REQUESTS, MAX_NAMES, Device
from netwatchd.devices.records import DeviceEvent

MAX_ADDRESS_NAMES = 4096  # address -> the name it was looked up by, from DNS answers


def bump(counts: Dict[str, int], key: str, cap: int) -> None:
    """Count `key`, keeping at most `cap` keys (the oldest one makes room)."""
    if key not in counts and len(counts) >= cap:
        del counts[next(iter(counts))]
    counts[key] = counts.get(key, 0) + 1


def append_capped(items: List[Any], item: Any, cap: int) -> None:
    items.append(item)
    del items[:-cap]


def ptr_to_address(name: str) -> str:
    labels = name.lower().rstrip(".").split(".")
    if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
        return ".".join(reversed(labels[:4]))
    if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
        nibbles = "".join(reversed(labels[:32]))
        return ":".join(nibbles[i : i + 4] for i in range(0, 32, 4))
    raise ValueError(name)


class AppMetadata:
    """Applies snippets to the inventory `inv` (the DeviceMonitor: devices, device(), bind(),
    mark_dirty())."""

    def __init__(self, inv):
        self.inv = inv
        self.address_names: "OrderedDict[str, str]" = OrderedDict()

    def apply(self, ev: DeviceEvent) -> None:
        handler = getattr(self, f"_on_{ev.app}", None)
        if handler is not None:
            handler(ev)

    def name_of(self, address: str) -> str:
        return self.address_names.get(address, "")

    def _device(self, ev: DeviceEvent) -> Device:
        return self.inv.device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)

    def _on_dns(self, ev: DeviceEvent) -> None:
        msg = app_parsers.parse_dns(ev.payload)
        if msg is None:
            return
        if not msg.is_response and ev.direction == "tx":
            device = self._device(ev)
            for q in msg.questions:
                bump(device.dns_names, q.name, MAX_NAMES)
        elif msg.is_response and msg.questions:
            asked = msg.questions[0].name
            for answer in msg.answers:
                if answer.rtype in ("A", "AAAA") and answer.value:
                    self._name_address(answer.value, asked)
                elif answer.rtype == "PTR" and answer.value:
                    self._name_from_ptr(answer.name, answer.value)

    def _name_address(self, address: str, name: str) -> None:
        self.address_names[address] = name
        self.address_names.move_to_end(address)
        while len(self.address_names) > MAX_ADDRESS_NAMES:
            self.address_names.popitem(last=False)
        for device in self.inv.devices.values():  # a name for one of our devices: its hostname
            if address in device.ipv4 or address in device.ipv6:
                self._set_hostname(device, name, "dns")

    def _name_from_ptr(self, ptr_name: str, host: str) -> None:
        try:
            address = str(ipaddress.ip_address(ptr_to_address(ptr_name)))
        except ValueError:
            return
        self._name_address(address, host)

    def _set_hostname(self, device: Device, name: str, source: str) -> None:
        if device.hostname_source == "dhcp" and source != "dhcp":
            return  # what the device calls itself beats what DNS calls it
        if (device.hostname, device.hostname_source) != (name, source):
            device.hostname, device.hostname_source = name, source
            self.inv.mark_dirty(device.mac)

    def _on_dhcp(self, ev: DeviceEvent) -> None:
        info = app_parsers.parse_dhcp(ev.payload)
        if info is None:
            return
        if info.client_mac and info.client_mac != ev.mac:
            return  # a client MAC that is not the frame's sender could name someone else
        device = self._device(ev)
        if info.hostname:
            self._set_hostname(device, info.hostname, "dhcp")
        for address in (info.requested_ip, info.client_ip):
            if address and address != "0.0.0.0":
                self.inv.bind(ev.mac, address, ev.timestamp_usec)
        if info.vendor_class:
            device.dhcp_vendor_class = info.vendor_class

    def _on_http(self, ev: DeviceEvent) -> None:
        req = app_parsers.parse_http_request(ev.payload)
        if req is None:
            return
        device = self._device(ev)
        host = req.host or self.name_of(ev.daddr) or ev.daddr
        bump(device.http_hosts, host, MAX_NAMES)
        append_capped(device.http_requests, {"method": req.method, "host": host, "path": req.path}, MAX_HTTP_REQUESTS)

    def _on_tls(self, ev: DeviceEvent) -> None:
        sni = app_parsers.parse_tls_sni(ev.payload)
        if sni:
            bump(self._device(ev).tls_names, sni, MAX_NAMES)
