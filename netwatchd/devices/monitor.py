"""The device engine: kernel counters and ring events in, the device inventory out.

Its parts, one job each: AppMetadata (DNS/DHCP/HTTP/TLS snippets), AddressOwners (which MAC
answers for which IP), InterfaceWatcher (attach/detach as interfaces come and go), and the
queries in netwatchd.devices.queries. This class keeps the devices, turns counter readings
into deltas and events into devices, and gathers each tick's observation for the detector.

It imports no edge: what it is given (a probe with drain / read_counters / losses / attach /
detach / attached / apply_settings, a vendor db, a store with load_devices / save_devices, a
clock and an interface lister) is real in the daemon and fake in unit tests.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any, Callable, Dict, List, Optional

from netwatchd.clock import boot_to_realtime_ns
from netwatchd.config import DevicesConfig
from netwatchd.devices import queries
from netwatchd.devices.address_owners import AddressOwners
from netwatchd.devices.app_metadata import AppMetadata, append_capped
from netwatchd.devices.beacon_starts import DeviceStarts
from netwatchd.devices.interface_watch import InterfaceWatcher
from netwatchd.devices.interfaces import read_interfaces
from netwatchd.devices.model import MAX_ADDRESSES, MAX_RECENT_PEERS, Device
from netwatchd.devices.records import (
    DeviceEvent,
    MalformedDeviceEvent,
    counters_dict,
    decode_device_event,
    interface_name,
)
from netwatchd.devices.vendors import is_randomized
from netwatchd.errors import StoreError
from netwatchd.record_decoding import RecordDecoder

log = logging.getLogger(__name__)


def remember_address(addresses: Dict[str, int], address: str, when: int) -> bool:
    new = address not in addresses
    if new and len(addresses) >= MAX_ADDRESSES:
        del addresses[min(addresses, key=addresses.get)]
    addresses[address] = when
    return new


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
        self.if_name = if_name
        self.devices: Dict[str, Device] = {}
        self.metadata = AppMetadata(self)
        self.owners = AddressOwners()
        self.watcher = InterfaceWatcher(probe, list_interfaces)
        # called as listener(mac, peer, port, transport, name) for each new pattern the TC
        # classifier reports (the daemon connects the PatternSeen signal here; no D-Bus in here)
        self.pattern_listeners: List[Callable[[str, str, int, str, str], None]] = []
        # called at every save and at stop (the known-pattern store writes its batch then)
        self.save_hooks: List[Callable[[], None]] = []
        self.close_hooks: List[Callable[[], None]] = []  # device_setup's, at stop
        self._boot_offset_ns = boot_to_realtime_ns()
        self._decoder = RecordDecoder(lambda raw: decode_device_event(raw, self._boot_offset_ns),
                                      MalformedDeviceEvent, "device events", log)
        self._kernel_last: Dict[str, Dict[str, int]] = {}
        self._dirty: set = set()
        self._last_save = 0.0
        # what happened since the last observation (see take_observation)
        self._obs_syns: Dict[str, int] = {}
        self._obs_new: List[str] = []
        self._obs_peers: Dict[str, set] = {}
        self._obs_ports: Dict[str, set] = {}
        self._obs_changes: List[Dict[str, Any]] = []
        self.beacon_starts = DeviceStarts(self._boot_offset_ns)  # SYN times per (device, peer, port)
        if store is not None:
            for device in store.load_devices():
                self.devices[device.mac] = device
        self.owners.learn_from(self.devices.values())

    @property
    def address_names(self):
        return self.metadata.address_names

    @property
    def malformed_events(self) -> int:
        return self._decoder.malformed

    def take_observation(self, obs) -> None:
        """What the devices did since the last observation, into a TickObservation: facts as
        they were seen. A new MAC that turns out to be a known device changing its MAC, a tick
        later, is sorted out by the detector (alerting/address_moves.py), so the replay history
        holds what happened and a replay decides the same way."""
        obs.device_connects.update(self._obs_syns)
        obs.device_new_peers.update({mac: len(v) for mac, v in self._obs_peers.items()})
        obs.device_new_ports.update({mac: len(v) for mac, v in self._obs_ports.items()})
        for mac in self._obs_new:
            d = self.devices[mac]
            obs.new_devices.append({"mac": mac, "vendor": d.vendor, "randomized": d.randomized,
                                    "interface": d.interface, "ipv4": sorted(d.ipv4), "ipv6": sorted(d.ipv6)})
        obs.address_changes.extend(self._obs_changes)
        obs.connection_starts.extend(self.beacon_starts.take(self.metadata.name_of))
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
        self.watcher.refresh(self.cfg.interfaces)

    def interfaces(self) -> List[str]:
        return self.watcher.names()

    # -- periodic work -----------------------------------------------------------------------
    def poll(self) -> int:
        raw = self.probe.drain()
        for event in self._decoder.decode_all(raw):
            self.apply(event)
        return len(raw)

    def tick(self) -> None:
        self.collect()
        # the ring after the counters: the classifier counts a SYN before it reports the SYN's
        # first-seen pattern, so draining now puts every counted SYN's new port in this tick
        # too. A poll that ran late (a busy loop) would otherwise leave a scan's 3000 SYNs in
        # one tick and its 3000 new ports in the next: a connect_rate alert besides the fan_out
        self.poll()
        self.refresh_interfaces()
        if self.clock() - self._last_save >= self.cfg.store_interval_sec:
            self.save()

    def collect(self) -> None:
        """Adds what the kernel counted since the last call to the devices' counters."""
        now = self._now_usec()
        read_starts = getattr(self.probe, "read_beacon_starts", None)  # None: beacons off
        if read_starts is not None:
            self.beacon_starts.read(read_starts())
        for mac, kernel in self.probe.read_counters().items():
            current = counters_dict(kernel)
            last = self._kernel_last.get(mac, {})
            delta = {k: v - last.get(k, 0) for k, v in current.items() if v > last.get(k, 0)}
            self._kernel_last[mac] = current
            if not delta:
                continue
            device = self.device(mac, now, kernel.ifindex, kernel.vlan)
            for k, v in delta.items():
                device.counters[k] = device.counters.get(k, 0) + v
            if delta.get("tcp_syns"):
                self._obs_syns[mac] = self._obs_syns.get(mac, 0) + delta["tcp_syns"]
            device.last_seen_usec = now
            self._dirty.add(mac)

    def save(self) -> None:
        """One transaction for everything that changed since the last save."""
        self._last_save = self.clock()
        for hook in self.save_hooks:
            try:
                hook()
            except Exception:  # another file's trouble must not cost the inventory its save
                log.exception("save hook failed")
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
    def mark_dirty(self, mac: str) -> None:
        self._dirty.add(mac)

    def device(self, mac: str, when_usec: int, ifindex: int = 0, vlan: int = 0) -> Device:
        """The device with this MAC, made (and reported as new) on first sight."""
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
            self.device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
        elif ev.kind == "address":
            self.bind(ev.mac, ev.saddr, ev.timestamp_usec, ev.ifindex, ev.vlan, from_arp_or_ndp=True)
        elif ev.kind == "pattern":
            self._pattern(ev)
        elif ev.kind == "snippet":
            self.metadata.apply(ev)

    def _pattern(self, ev: DeviceEvent) -> None:
        device = self.device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
        device.peers += 1
        self._obs_peers.setdefault(ev.mac, set()).add(ev.daddr)
        self._obs_ports.setdefault(ev.mac, set()).add((ev.transport, ev.dport))
        peer = {"address": ev.daddr, "port": ev.dport, "transport": ev.transport,
                "name": self.metadata.name_of(ev.daddr)}
        append_capped(device.recent_peers, peer, MAX_RECENT_PEERS)
        for listener in self.pattern_listeners:
            try:
                listener(ev.mac, ev.daddr, ev.dport, ev.transport, peer["name"])
            except Exception:  # a broken listener must not lose the device's bookkeeping
                log.exception("pattern listener failed")

    def bind(self, mac: str, address: str, when: int, ifindex: int = 0, vlan: int = 0,
             from_arp_or_ndp: bool = False) -> None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return
        if ip.is_unspecified or ip.is_multicast:
            return
        device = self.device(mac, when, ifindex, vlan)
        table = device.ipv4 if ip.version == 4 else device.ipv6
        if remember_address(table, str(ip), when):
            log.info("device %s uses %s", mac, ip)
        if from_arp_or_ndp:  # what a device answers for; a DHCP request is only a wish
            change = self.owners.claim(str(ip), mac)
            if change is not None:
                self._obs_changes.append(change)

    # -- queries (read-only) -----------------------------------------------------------------
    def list_devices(self) -> List[Device]:
        return queries.list_devices(self.devices.values())

    def get_device(self, mac_or_ip: str) -> Device:
        return queries.find_device(self.devices, mac_or_ip)

    def protocol_totals(self) -> Dict[str, int]:
        return queries.protocol_totals(self.devices.values())

    def events_lost(self) -> int:
        """Everything the device path lost: events that found the ring full, frames of devices
        that found the counter map full (devices.max_devices), events that did not decode."""
        losses = self.probe.losses()
        return losses["ring_full"] + losses.get("devices_full", 0) + self.malformed_events
