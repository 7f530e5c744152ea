"""The device engine: kernel counters and ring events in, the device inventory out.

Pure apart from what it is given: a probe (drain / read_counters / losses / attach / detach /
attached / apply_settings), a vendor db, an optional store, a clock and an interface lister,
so unit tests drive it with fakes.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from . import app_parsers
from .config import DevicesConfig
from .connect_monitor import boot_to_realtime_ns
from .device_record import DeviceEvent, MalformedDeviceEvent, counters_dict, decode_device_event, interface_name
from .devices import (
    MAX_ADDRESSES,
    MAX_HTTP_REQUESTS,
    MAX_NAMES,
    MAX_RECENT_PEERS,
    PROTOCOLS,
    Device,
    normalize_mac,
)
from .interfaces import choose, read_interfaces
from .inventory_store import StoreError
from .queries import InvalidQuery
from .vendors import is_randomized

log = logging.getLogger(__name__)

MAX_ADDRESS_NAMES = 4096  # address -> the name it was looked up by, from DNS answers


class NoSuchDevice(LookupError):
    """GetDevice for an address no device has; the message says which."""


def bump(counts: Dict[str, int], key: str, cap: int) -> None:
    """Count `key`, keeping at most `cap` keys (the oldest one makes room)."""
    if key not in counts and len(counts) >= cap:
        del counts[next(iter(counts))]
    counts[key] = counts.get(key, 0) + 1


def remember_address(addresses: Dict[str, int], address: str, when: int) -> bool:
    new = address not in addresses
    if new and len(addresses) >= MAX_ADDRESSES:
        del addresses[min(addresses, key=addresses.get)]
    addresses[address] = when
    return new


def append_capped(items: List[Any], item: Any, cap: int) -> None:
    items.append(item)
    del items[:-cap]


class DeviceMonitor:
    def __init__(
        self,
        probe,
        cfg: DevicesConfig,
        vendors,
        store=None,
        clock: Callable[[], float] = time.time,
        list_interfaces: Callable[[], Dict] = read_interfaces,
        if_name: Callable[[int], Optional[str]] = interface_name,
    ):
        self.probe = probe
        self.cfg = cfg
        self.started_cfg = cfg  # restart-only settings keep these values until a restart
        self.vendors = vendors
        self.store = store
        self.clock = clock
        self.list_interfaces = list_interfaces
        self.if_name = if_name
        self.devices: Dict[str, Device] = {}
        self.address_names: "OrderedDict[str, str]" = OrderedDict()
        # called as listener(mac, peer, port, transport, name) for each new pattern the TC
        # classifier reports (the daemon connects the PatternSeen signal here; no D-Bus in here)
        self.pattern_listeners: List[Callable[[str, str, int, str, str], None]] = []
        self.malformed_events = 0
        self._kernel_last: Dict[str, Dict[str, int]] = {}
        self._dirty: set = set()
        self._refused: set = set()  # interfaces whose attach failed, logged once
        # what happened since the last observation (see take_observation)
        self._obs_syns: Dict[str, int] = {}
        self._obs_new: List[str] = []
        self._held_new: List[str] = []  # new, but no address yet: reported a tick later
        self._obs_peers: Dict[str, set] = {}
        self._obs_ports: Dict[str, set] = {}
        self._obs_changes: List[Dict[str, Any]] = []
        # which MAC each IP address belongs to now, and before (flip-flops)
        self._last_save = 0.0
        self._boot_offset_ns = boot_to_realtime_ns()
        self.ip_owner: Dict[str, str] = {}
        self.ip_previous_owner: Dict[str, str] = {}
        if store is not None:
            for device in store.load_devices():
                self.devices[device.mac] = device
        self._owners_from_inventory()

    def _owners_from_inventory(self) -> None:
        latest: Dict[str, int] = {}
        for device in self.devices.values():
            for table in (device.ipv4, device.ipv6):
                for ip, seen in table.items():
                    if seen >= latest.get(ip, -1):
                        latest[ip], self.ip_owner[ip] = seen, device.mac

    def take_observation(self, obs) -> None:
        """What the devices did since the last observation, into a TickObservation.

        A new MAC with no address yet is reported one observation later: a device that changes
        its MAC may send something else first (Linux sends an MLD report) and the ARP that
        shows its address moved only a moment later, in the next tick; the detector reports a
        new MAC taking over a known address as address_change, not also as new_device, only
        when both are in one observation."""
        obs.device_connects.update(self._obs_syns)
        obs.device_new_peers.update({mac: len(v) for mac, v in self._obs_peers.items()})
        obs.device_new_ports.update({mac: len(v) for mac, v in self._obs_ports.items()})
        held, self._held_new = self._held_new, []
        for mac in held + self._obs_new:
            d = self.devices[mac]
            if mac not in held and not d.ipv4 and not d.ipv6:
                self._held_new.append(mac)
                continue
            obs.new_devices.append({"mac": mac, "vendor": d.vendor, "randomized": d.randomized,
                                    "interface": d.interface, "ipv4": sorted(d.ipv4), "ipv6": sorted(d.ipv6)})
        obs.address_changes.extend(self._obs_changes)
        self._obs_syns, self._obs_new, self._obs_peers, self._obs_ports, self._obs_changes = {}, [], {}, {}, []

    def _now_usec(self) -> int:
        return int(self.clock() * 1e6)

    # -- configuration -----------------------------------------------------------------------
    def reconfigure(self, cfg: DevicesConfig) -> List[str]:
        restart_keys = [
            f"devices.{k}"
            for k in ("max_devices", "max_patterns", "ring_buffer_kib", "tc_attach")
            if getattr(cfg, k) != getattr(self.started_cfg, k)
        ]
        self.probe.apply_settings(cfg)
        self.cfg = cfg
        self.refresh_interfaces()
        return restart_keys

    def refresh_interfaces(self) -> None:
        """Attach to interfaces that appeared, let go of those that vanished."""
        available = self.list_interfaces()
        wanted = choose(self.cfg.interfaces, available)
        current = dict(self.probe.attached())
        for name, ifindex in list(current.items()):
            if name in wanted and wanted[name].ifindex == ifindex:
                continue
            self.probe.detach(name, ifindex)
            now = available.get(name)
            if now is None or now.ifindex != ifindex:
                log.warning("interface %s is gone; will watch it again when it returns", name)
            elif not now.up:
                log.warning("interface %s is down; will watch it again when it is up", name)
            else:
                log.info("no longer watching %s (devices.interfaces changed)", name)
        for name, iface in wanted.items():
            if current.get(name) == iface.ifindex:
                continue
            try:
                self.probe.attach(iface)
                self._refused.discard(name)
                log.info("watching devices on %s", name)
            except OSError as e:  # vanished in between, or refused: try again next tick
                if name not in self._refused:  # say it once, not every tick
                    log.warning("cannot watch %s: %s (will keep trying)", name, e)
                    self._refused.add(name)

    def interfaces(self) -> List[str]:
        return [name for name, _ in self.probe.attached()]

    # -- periodic work -----------------------------------------------------------------------
    def poll(self) -> int:
        raw = self.probe.drain()
        for item in raw:
            try:
                self.apply(decode_device_event(item, self._boot_offset_ns))
            except MalformedDeviceEvent as e:
                self.malformed_events += 1
                if self.malformed_events == 1 or self.malformed_events % 10000 == 0:
                    log.warning("dropped malformed device events (%d so far): %s", self.malformed_events, e)
        return len(raw)

    def tick(self) -> None:
        self.collect()
        self.refresh_interfaces()
        if self.clock() - self._last_save >= self.cfg.store_interval_sec:
            self.save()

    def collect(self) -> None:
        """Adds what the kernel counted since the last call to the devices' counters."""
        now = self._now_usec()
        for mac, kernel in self.probe.read_counters().items():
            current = counters_dict(kernel)
            last = self._kernel_last.get(mac, {})
            delta = {k: v - last.get(k, 0) for k, v in current.items() if v > last.get(k, 0)}
            self._kernel_last[mac] = current
            if not delta:
                continue
            device = self._device(mac, now, kernel.ifindex, kernel.vlan)
            for k, v in delta.items():
                device.counters[k] = device.counters.get(k, 0) + v
            if delta.get("tcp_syns"):
                self._obs_syns[mac] = self._obs_syns.get(mac, 0) + delta["tcp_syns"]
            device.last_seen_usec = now
            self._dirty.add(mac)

    def save(self) -> None:
        """One transaction for everything that changed since the last save."""
        self._last_save = self.clock()
        if self.store is None or not self._dirty:
            return
        batch = [self.devices[mac] for mac in self._dirty if mac in self.devices]
        try:
            self.store.save_devices(batch)
        except StoreError as e:  # a full disk: keep the changes and try again next interval
            log.error("cannot save the inventory: %s", e)
            return
        self._dirty.clear()

    # -- events ------------------------------------------------------------------------------
    def _device(self, mac: str, when_usec: int, ifindex: int = 0, vlan: int = 0) -> Device:
        device = self.devices.get(mac)
        if device is None:
            device = Device(
                mac=mac,
                vendor=self.vendors.lookup(mac),
                randomized=is_randomized(mac),
                first_seen_usec=when_usec,
                last_seen_usec=when_usec,
                interface=self.if_name(ifindex) or "" if ifindex else "",
                vlan=vlan,
            )
            self.devices[mac] = device
            self._obs_new.append(mac)
            log.info("new device %s (%s) on %s", mac, device.vendor or "unknown vendor", device.interface or "?")
        elif ifindex:
            name = self.if_name(ifindex)
            if name and name != device.interface:
                device.interface = name
        self._dirty.add(mac)
        return device

    def apply(self, ev: DeviceEvent) -> None:
        if ev.kind == "new_device":
            self._device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
        elif ev.kind == "address":
            self._bind(ev.mac, ev.saddr, ev.timestamp_usec, ev.ifindex, ev.vlan, from_arp_or_ndp=True)
        elif ev.kind == "pattern":
            device = self._device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
            device.peers += 1
            self._obs_peers.setdefault(ev.mac, set()).add(ev.daddr)
            self._obs_ports.setdefault(ev.mac, set()).add((ev.transport, ev.dport))
            peer = {"address": ev.daddr, "port": ev.dport, "transport": ev.transport,
                    "name": self.address_names.get(ev.daddr, "")}
            append_capped(device.recent_peers, peer, MAX_RECENT_PEERS)
            for listener in self.pattern_listeners:
                try:
                    listener(ev.mac, ev.daddr, ev.dport, ev.transport, peer["name"])
                except Exception:  # a broken listener must not lose the device's bookkeeping
                    log.exception("pattern listener failed")
        elif ev.kind == "snippet":
            handler = getattr(self, f"_on_{ev.app}", None)
            if handler is not None:
                handler(ev)

    def _bind(self, mac: str, address: str, when: int, ifindex: int = 0, vlan: int = 0,
              from_arp_or_ndp: bool = False) -> None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return
        if ip.is_unspecified or ip.is_multicast:
            return
        device = self._device(mac, when, ifindex, vlan)
        table = device.ipv4 if ip.version == 4 else device.ipv6
        if remember_address(table, str(ip), when):
            log.info("device %s uses %s", mac, ip)
        if from_arp_or_ndp:  # what a device answers for; a DHCP request is only a wish
            self._owner_is(str(ip), mac)

    def _owner_is(self, ip: str, mac: str) -> None:
        old = self.ip_owner.get(ip)
        if old is not None and old != mac:
            flip = self.ip_previous_owner.get(ip) == mac
            self._obs_changes.append({"ip": ip, "old_mac": old, "new_mac": mac, "flip_flop": flip})
            self.ip_previous_owner[ip] = old
            log.warning("%s %s: %s -> %s", ip, "flip-flopped" if flip else "changed MAC", old, mac)
        self.ip_owner[ip] = mac

    def _on_dns(self, ev: DeviceEvent) -> None:
        msg = app_parsers.parse_dns(ev.payload)
        if msg is None:
            return
        if not msg.is_response and ev.direction == "tx":
            device = self._device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
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
        for device in self.devices.values():  # a name for one of our devices: its hostname
            if address in device.ipv4 or address in device.ipv6:
                self._set_hostname(device, name, "dns")

    def _name_from_ptr(self, ptr_name: str, host: str) -> None:
        try:
            address = str(ipaddress.ip_address(_ptr_to_address(ptr_name)))
        except ValueError:
            return
        self._name_address(address, host)

    def _set_hostname(self, device: Device, name: str, source: str) -> None:
        if device.hostname_source == "dhcp" and source != "dhcp":
            return  # what the device calls itself beats what DNS calls it
        if (device.hostname, device.hostname_source) != (name, source):
            device.hostname, device.hostname_source = name, source
            self._dirty.add(device.mac)

    def _on_dhcp(self, ev: DeviceEvent) -> None:
        info = app_parsers.parse_dhcp(ev.payload)
        if info is None:
            return
        if info.client_mac and info.client_mac != ev.mac:
            return  # a client MAC that is not the frame's sender could name someone else
        mac = ev.mac
        device = self._device(mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
        if info.hostname:
            self._set_hostname(device, info.hostname, "dhcp")
        for address in (info.requested_ip, info.client_ip):
            if address and address != "0.0.0.0":
                self._bind(mac, address, ev.timestamp_usec)
        if info.vendor_class:
            device.dhcp_vendor_class = info.vendor_class

    def _on_http(self, ev: DeviceEvent) -> None:
        req = app_parsers.parse_http_request(ev.payload)
        if req is None:
            return
        device = self._device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
        host = req.host or self.address_names.get(ev.daddr, "") or ev.daddr
        bump(device.http_hosts, host, MAX_NAMES)
        append_capped(device.http_requests, {"method": req.method, "host": host, "path": req.path}, MAX_HTTP_REQUESTS)

    def _on_tls(self, ev: DeviceEvent) -> None:
        sni = app_parsers.parse_tls_sni(ev.payload)
        if sni:
            device = self._device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
            bump(device.tls_names, sni, MAX_NAMES)

    # -- queries -----------------------------------------------------------------------------
    def list_devices(self) -> List[Device]:
        return sorted(self.devices.values(), key=lambda d: d.first_seen_usec)

    def get_device(self, mac_or_ip: str) -> Device:
        try:
            mac = normalize_mac(mac_or_ip)
        except ValueError:
            mac = None
        if mac is not None:
            if mac in self.devices:
                return self.devices[mac]
            raise NoSuchDevice(f"no device with MAC {mac} has been seen")
        try:
            ip = str(ipaddress.ip_address(mac_or_ip.strip()))
        except ValueError:
            raise InvalidQuery(f"{mac_or_ip!r} is neither a MAC address nor an IP address") from None
        owners = [d for d in self.devices.values() if ip in d.ipv4 or ip in d.ipv6]
        if not owners:
            raise NoSuchDevice(f"no device with address {ip} has been seen")
        return max(owners, key=lambda d: (d.ipv4.get(ip) or d.ipv6.get(ip) or 0))

    def protocol_totals(self) -> Dict[str, int]:
        """Packets per protocol over every device, both directions (for `netwatchctl status`)."""
        totals = {p: 0 for p in PROTOCOLS}
        for device in self.devices.values():
            for p in PROTOCOLS:
                totals[p] += device.counters.get(f"tx_{p}_packets", 0) + device.counters.get(f"rx_{p}_packets", 0)
        return totals

    def events_lost(self) -> int:
        return self.probe.losses()["ring_full"] + self.malformed_events


def _ptr_to_address(name: str) -> str:
    labels = name.lower().rstrip(".").split(".")
    if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
        return ".".join(reversed(labels[:4]))
    if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
        nibbles = "".join(reversed(labels[:32]))
        return ":".join(nibbles[i : i + 4] for i in range(0, 32, 4))
    raise ValueError(name)


def device_answer(device: Device) -> Dict[str, Any]:
    """A device as D-Bus and netwatchctl show it."""
    return {
        "mac": device.mac,
        "vendor": device.vendor,
        "randomized": device.randomized,
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
        "dns_names": sorted(device.dns_names),
        "http_hosts": sorted(device.http_hosts),
        "tls_names": sorted(device.tls_names),
        "http_requests": [[r["method"], r["host"], r["path"]] for r in device.http_requests],
        "recent_peers": [[p["address"], p["port"], p["transport"], p["name"]] for p in device.recent_peers],
    }
