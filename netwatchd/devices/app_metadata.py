"""What devices' DNS, DHCP, HTTP and TLS snippets say about them: names looked up, hostnames,
addresses asked for, HTTP hosts and requests, TLS server names. Only metadata is kept, bounded
in entries and bytes per device (netwatchd.devices.model).

Every snippet was written by a device that may lie, so each fact is taken only from whom it can
be about:
  - a DNS question names what the asking device looked up (its dns_names);
  - a DNS answer counts only when it answers that device's own question (dns_answers.py), and
    what it resolves is that device's view: `name_of(mac, address)` answers per device, so no
    device can label another's destinations (beacon names) by sending answers nobody asked for;
  - a matched answer that resolves to an address one of our devices uses names that device
    (hostname, source "dns") unless the device named itself over DHCP (source "dhcp" wins);
  - DHCP speaks only for the client MAC in the frame's own source; TLS and HTTP only for the
    sender;
  - a DHCP server's reply (OFFER, ACK) sent by a device says only that the frame's source serves
    DHCP, with the router and DNS servers it hands out: it changes no device record (its client
    is someone else, whom the sender may not name), and becomes one entry of the tick's
    `dhcp_replies` (alerting/dhcp_servers.py), deduplicated and at most MAX_DHCP_REPLIES a tick.
"""
from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any, Dict, List, Tuple

from netwatchd.devices import app_parsers
from netwatchd.devices.dns_answers import PendingQuestions, answered_addresses, answered_ptr, question_key
from netwatchd.devices.dns_tally import DnsTally
from netwatchd.devices.model import (HTTP_REQUESTS_BYTES, MAX_HTTP_REQUESTS, MAX_NAMES, NAMES_BYTES, Device,
                                     append_bounded, bump_bounded)
from netwatchd.devices.records import DeviceEvent

MAX_RESOLVED = 32  # per device: the addresses its own lookups resolved, newest...
RESOLVED_BYTES = 2048  # ...in at most these bytes of names
DNS_PORT = 53
DHCP_SERVER_PORT = 67
MAX_DHCP_REPLIES = 64  # distinct server replies kept per tick; more are counted (dhcp_replies_dropped)
SERVER_REPLIES = frozenset({"OFFER", "ACK"})  # what hands out a router and DNS servers


def ptr_to_address(name: str) -> str:
    labels = name.lower().rstrip(".").split(".")
    if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
        return ".".join(reversed(labels[:4]))
    if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
        nibbles = "".join(reversed(labels[:32]))
        return ":".join(nibbles[i : i + 4] for i in range(0, 32, 4))
    raise ValueError(name)


def request_size(request: Dict[str, str]) -> int:
    return sum(map(len, request.values()))


class AppMetadata:
    """Applies snippets to the inventory `inv` (the DeviceMonitor: devices(), device(), bind(),
    owners_of(), mark_dirty())."""

    def __init__(self, inv):
        self.inv = inv
        self.questions = PendingQuestions()
        self.dns = DnsTally()  # this tick's NXDOMAIN answers and names asked, per device (dns anomalies)
        # mac -> {address: name} its own answered lookups resolved, oldest first
        self.resolved: Dict[str, "OrderedDict[str, str]"] = {}
        # this tick's DHCP server replies, one per (server, interface, vlan, router, dns)
        self.dhcp_replies: Dict[Tuple, Dict[str, Any]] = {}
        self.dhcp_replies_dropped = 0  # distinct replies beyond MAX_DHCP_REPLIES in a tick

    def apply(self, ev: DeviceEvent) -> None:
        handler = getattr(self, f"_on_{ev.app}", None)
        if handler is not None:
            handler(ev)

    def name_of(self, mac: str, address: str) -> str:
        """The name device `mac` looked `address` up by, or ""."""
        names = self.resolved.get(mac)
        return names.get(address, "") if names else ""

    def forget(self, mac: str) -> None:
        """A device left the inventory: what it resolved and asked goes with it."""
        self.resolved.pop(mac, None)
        self.questions.forget_device(mac)

    def _device(self, ev: DeviceEvent) -> Device:
        return self.inv.device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)

    # -- DNS ---------------------------------------------------------------------------------
    def _on_dns(self, ev: DeviceEvent) -> None:
        msg = app_parsers.parse_dns(ev.payload)
        if msg is None:
            return
        if ev.direction == "tx" and ev.dport == DNS_PORT and not msg.is_response:
            device = self._device(ev)
            for q in msg.questions:
                bump_bounded(device.dns_names, q.name, MAX_NAMES, NAMES_BYTES["dns_names"])
                self.dns.asked(ev.mac, q.name)
            self.inv.mark_dirty(ev.mac)
            self.questions.asked(question_key(ev.mac, ev.saddr, ev.sport, ev.daddr, msg), ev.timestamp_usec)
        elif ev.direction == "rx" and ev.sport == DNS_PORT and msg.is_response:
            # an answer on its way to device ev.mac: its question was ev.mac's, from the address
            # and port the answer goes to, to the server it comes from
            key = question_key(ev.mac, ev.daddr, ev.dport, ev.saddr, msg)
            if not self.questions.answered(key, ev.timestamp_usec):
                return
            # an NXDOMAIN counts for ev.mac only here: the answer to a question ev.mac asked
            self.dns.answered(ev.mac, msg.questions[0].name, msg.rcode)
            for address, name in answered_addresses(msg):
                self._resolved(ev.mac, address, name)
            ptr = answered_ptr(msg)
            if ptr is not None:
                self._name_from_ptr(ev.mac, *ptr)
        else:  # a response sent by a device, or a query going to one: nobody's answer
            self.questions.counts.unsolicited += msg.is_response

    def _resolved(self, mac: str, address: str, name: str) -> None:
        names = self.resolved.setdefault(mac, OrderedDict())
        names.pop(address, None)
        names[address] = name
        while len(names) > MAX_RESOLVED or sum(map(len, names.values())) > RESOLVED_BYTES:
            names.popitem(last=False)
        for device in self.inv.owners_of(address):  # a name for one of our devices: its hostname
            self._set_hostname(device, name, "dns")

    def _name_from_ptr(self, mac: str, ptr_name: str, host: str) -> None:
        try:
            address = str(ipaddress.ip_address(ptr_to_address(ptr_name)))
        except ValueError:
            return
        self._resolved(mac, address, host)

    def _set_hostname(self, device: Device, name: str, source: str) -> None:
        if device.hostname_source == "dhcp" and source != "dhcp":
            return  # what the device calls itself beats what DNS calls it
        if (device.hostname, device.hostname_source) != (name, source):
            device.hostname, device.hostname_source = name, source
            self.inv.mark_dirty(device.mac)

    # -- DHCP, HTTP, TLS -----------------------------------------------------------------------
    def _on_dhcp(self, ev: DeviceEvent) -> None:
        info = app_parsers.parse_dhcp(ev.payload)
        if info is None:
            return
        if info.op == "reply":
            self._dhcp_reply(ev, info)
            return  # a reply is about its client, whom the sender may not name: no record changes
        if info.client_mac and info.client_mac != ev.mac:
            return  # a client MAC that is not the frame's sender could name someone else
        device = self._device(ev)
        if info.hostname:
            self._set_hostname(device, info.hostname, "dhcp")
        for address in (info.requested_ip, info.client_ip):
            if address and address != "0.0.0.0":
                self.inv.bind(ev.mac, address, ev.timestamp_usec)
        if info.vendor_class and info.vendor_class != device.dhcp_vendor_class:
            device.dhcp_vendor_class = info.vendor_class
            self.inv.mark_dirty(ev.mac)

    def _dhcp_reply(self, ev: DeviceEvent, info: app_parsers.DhcpInfo) -> None:
        """A server reply the device ev.mac sent: noted for the tick's observation."""
        if ev.direction != "tx" or ev.sport != DHCP_SERVER_PORT or info.message_type not in SERVER_REPLIES:
            return
        key = (ev.mac, ev.ifindex, ev.vlan, info.router, info.dns)
        if key in self.dhcp_replies:
            return  # an OFFER and its ACK, or one server's many clients: one entry a tick
        if len(self.dhcp_replies) >= MAX_DHCP_REPLIES:
            self.dhcp_replies_dropped += 1  # forged servers by the thousand: the first ones tell
            return
        unspecified = not ev.saddr or ev.saddr == "0.0.0.0"
        self.dhcp_replies[key] = {
            "server_mac": ev.mac, "server_ip": info.server_id if unspecified else ev.saddr,
            "interface": (self.inv.if_name(ev.ifindex) or "") if ev.ifindex else "", "vlan": ev.vlan,
            "router": info.router, "dns": list(info.dns), "message_type": info.message_type}

    def take_dhcp_replies(self) -> List[Dict[str, Any]]:
        """The server replies seen since the last call (TickObservation.dhcp_replies)."""
        replies, self.dhcp_replies = list(self.dhcp_replies.values()), {}
        return replies

    def _on_http(self, ev: DeviceEvent) -> None:
        req = app_parsers.parse_http_request(ev.payload)
        if req is None:
            return
        device = self._device(ev)
        host = req.host or self.name_of(ev.mac, ev.daddr) or ev.daddr
        bump_bounded(device.http_hosts, host, MAX_NAMES, NAMES_BYTES["http_hosts"])
        append_bounded(device.http_requests, {"method": req.method, "host": host, "path": req.path},
                       MAX_HTTP_REQUESTS, HTTP_REQUESTS_BYTES, request_size)
        self.inv.mark_dirty(ev.mac)

    def _on_tls(self, ev: DeviceEvent) -> None:
        sni = app_parsers.parse_tls_sni(ev.payload)
        if sni:
            bump_bounded(self._device(ev).tls_names, sni, MAX_NAMES, NAMES_BYTES["tls_names"])
            self.inv.mark_dirty(ev.mac)
