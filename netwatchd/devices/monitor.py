"""The device engine: kernel counters and ring events in, the device inventory out.

Its parts, one job each: CounterDeltas (the kernel's LRU counters -> what changed),
AppMetadata (DNS/DHCP/HTTP/TLS snippets), AddressOwners (which MAC answers for which IP),
AddressIndex (which devices use an address), InterfaceWatcher (attach/detach as interfaces
come and go), inventory_bounds (who leaves a full inventory), ActivityLog (one log line per
minute, not per device), and the queries in netwatchd.devices.queries. This class keeps the
devices, turns counter readings and events into devices, and gathers each tick's observation
for the detector.

Everything here is written by devices that may lie and flood: the inventory holds at most
devices.max_devices devices (unconfirmed ones leave first, inventory_bounds.py), idle ones
expire, and what leaves is counted (`evicted`, `expired`).

It imports no edge: what it is given (a probe with drain / read_counters / losses (a
netwatchd.devices.records.DeviceLosses) / attach / detach / attached / apply_settings, and
read_beacon_starts / read_address_bindings when it has them; a vendor db, a store with
load_devices / save, a clock, an interface lister and an interface namer) is real in the daemon
and fake in unit tests. The defaults of the last three read the system: the wall clock,
netwatchd.interfaces.read_interfaces (/sys/class/net) and netwatchd.devices.records.interface_name
(if_indextoname).
"""
from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any, Callable, Dict, List, Optional

from netwatchd.clock import boot_to_realtime_ns
from netwatchd.config import DevicesConfig
from netwatchd.devices import queries
from netwatchd.devices.activity_log import ActivityLog
from netwatchd.devices.address_index import AddressIndex, owners
from netwatchd.devices.address_owners import AddressOwners
from netwatchd.devices.app_metadata import AppMetadata
from netwatchd.devices.beacon_starts import DeviceStarts
from netwatchd.devices.counter_deltas import CounterDeltas
from netwatchd.devices.interface_watch import InterfaceWatcher
from netwatchd.devices.probes import SWEEPS, TickProbes
from netwatchd.interfaces import read_interfaces
from netwatchd.devices.inventory_bounds import evictions, expired
from netwatchd.devices.model import (MAX_ADDRESSES, MAX_RECENT_PEERS, RECENT_PEERS_BYTES, Device, append_bounded,
                                     seen_by_ipv6_alone)
from netwatchd.devices.records import DeviceEvent, MalformedDeviceEvent, decode_device_event, interface_name
from netwatchd.devices.vendors import is_randomized
from netwatchd.errors import StoreError
from netwatchd.record_decoding import RecordDecoder

log = logging.getLogger(__name__)

EXPIRE_EVERY_SEC = 60.0  # how often idle devices are looked for (a pass over the inventory)
# An unconfirmed device is written to disk only once it has been known this long (or at a clean
# stop): a flood's MACs come and go by the thousand per tick, and writing and deleting their
# rows would be the flood's most expensive part. A crash in between costs what the cooldown of
# its new_device alert already covers (the detector's state is saved).
UNCONFIRMED_SAVE_DELAY_USEC = 60_000_000


def peer_size(peer: Dict[str, Any]) -> int:
    return len(peer["address"]) + len(peer["name"])


def sent_frames(delta: Dict[str, int]) -> int:
    return sum(v for k, v in delta.items() if k.startswith("tx_") and k.endswith("_packets"))


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
        self.vendors = vendors
        self.store = store
        self.clock = clock
        self.if_name = if_name
        self.devices: Dict[str, Device] = {}
        self.metadata = AppMetadata(self)
        self.owners = AddressOwners()
        self.addresses = AddressIndex()
        self.watcher = InterfaceWatcher(probe, list_interfaces)
        self.activity = ActivityLog(log, clock)
        # called as listener(mac, peer, port, transport, name) for each new pattern the TC
        # classifier reports (add_pattern_listener: the known-pattern store, D-Bus PatternSeen)
        self.pattern_listeners: List[Callable[[str, str, int, str, str], None]] = []
        # called at every save and at stop (the known-pattern store writes its batch then)
        self.save_hooks: List[Callable[[], None]] = []
        self.close_hooks: List[Callable[[], None]] = []  # device_setup's, at stop
        self._boot_offset_ns = boot_to_realtime_ns()
        self._decoder = RecordDecoder(lambda raw: decode_device_event(raw, self._boot_offset_ns),
                                      MalformedDeviceEvent, "device events", log)
        self._counters = CounterDeltas()
        self._ring_lost_seen = 0  # records lost (ring full, throttled) when the owners were last reconciled
        self._tick = 0
        self._sent_tick: Dict[str, int] = {}  # the last tick a device sent frames in (confirmation)
        # what the store must write at the next save: metadata, counters, rows to delete
        self._dirty: set = set()
        self._dirty_counters: set = set()
        self._deleted: set = set()
        self._stored: set = set()  # MACs with rows in the store: only those need deleting
        self._last_save = 0.0
        self._last_expiry = clock()
        self.evicted = 0  # devices dropped from the full inventory
        self.expired = 0  # idle devices forgotten
        # what happened since the last observation (see take_observation)
        self._obs_syns: Dict[str, int] = {}
        self._obs_new: Dict[str, Optional[Dict[str, Any]]] = {}  # mac -> snapshot if evicted meanwhile
        self._obs_confirmed: List[str] = []
        self._obs_peers: Dict[str, set] = {}
        self._obs_ports: Dict[str, set] = {}
        self._obs_changes: List[Dict[str, Any]] = []
        self._obs_ipv4_shown: List[str] = []  # devices whose first IPv4 address showed this tick
        self._obs_probes = TickProbes()  # first-seen (host, port) pairs per device, for the scan windows
        self.beacon_starts = DeviceStarts(self._boot_offset_ns)  # SYN times per (device, peer, port)
        if store is not None:
            for device in store.load_devices():
                self.devices[device.mac] = device
                self.addresses.add_device(device)
            self._stored = set(self.devices)
        self.owners.learn_from(self.devices.values())

    @property
    def malformed_events(self) -> int:
        return self._decoder.malformed

    def add_pattern_listener(self, listener: Callable[[str, str, int, str, str], None]) -> None:
        """`listener(mac, peer, port, transport, name)` for each new pattern from now on."""
        self.pattern_listeners.append(listener)

    @property
    def kernel_evicted(self) -> int:
        """Kernel device-map entries the LRU evicted (a flood of new MACs makes it)."""
        return self._counters.evicted

    def owners_of(self, address: str) -> List[Device]:
        """The devices that use `address` (through the index, not a scan)."""
        return owners(self.addresses, self.devices, address)

    def take_observation(self, obs) -> None:
        """What the devices did since the last observation, into a TickObservation: facts as
        they were seen. A new MAC that turns out to be a known device changing its MAC, a tick
        later, is sorted out by the detector (alerting/address_moves.py), so the replay history
        holds what happened and a replay decides the same way."""
        obs.device_connects.update(self._obs_syns)
        obs.device_new_peers.update({mac: len(v) for mac, v in self._obs_peers.items()})
        obs.device_new_ports.update({mac: len(v) for mac, v in self._obs_ports.items()})
        for mac, snapshot in self._obs_new.items():
            obs.new_devices.append(snapshot or self._new_device_fact(self.devices[mac]))
        obs.devices_confirmed.extend(self._new_device_fact(self.devices[mac]) for mac in self._obs_confirmed
                                     if mac in self.devices)
        obs.address_changes.extend(self._obs_changes)
        obs.devices_ipv4_shown.extend(self._obs_ipv4_shown)
        obs.connection_starts.extend(self.beacon_starts.take(self.metadata.name_of))
        obs.device_probes.update(self._obs_probes.take())
        obs.dhcp_replies.extend(self.metadata.take_dhcp_replies())
        obs.dns_activity.update(self.metadata.dns.take())
        self._obs_syns, self._obs_new, self._obs_peers, self._obs_ports = {}, {}, {}, {}
        self._obs_changes, self._obs_confirmed, self._obs_ipv4_shown = [], [], []

    @staticmethod
    def _new_device_fact(d: Device) -> Dict[str, Any]:
        return {"mac": d.mac, "vendor": d.vendor, "randomized": d.randomized, "interface": d.interface,
                "ipv4": sorted(d.ipv4), "ipv6": sorted(d.ipv6), "ipv6_only": seen_by_ipv6_alone(d)}

    def _now_usec(self) -> int:
        return int(self.clock() * 1e6)

    # -- configuration -----------------------------------------------------------------------
    def reconfigure(self, cfg: DevicesConfig) -> None:
        """Apply what can change live: the privacy switches, the interfaces (the restart-only keys,
        netwatchd/config.py's metadata, keep the values the probe was built with)."""
        self.probe.apply_settings(cfg)
        self.cfg = cfg
        self.refresh_interfaces()

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
        self.reconcile_owners()
        self.refresh_interfaces()
        self.bound()
        self.activity.flush()
        if self.clock() - self._last_save >= self.cfg.store_interval_sec:
            self.save()

    def collect(self) -> None:
        """Adds what the kernel counted since the last call to the devices' counters."""
        self._tick += 1
        now = self._now_usec()
        read_starts = getattr(self.probe, "read_beacon_starts", None)  # None: beacons off
        if read_starts is not None:
            self.beacon_starts.read(read_starts())
        evicted_before = self._counters.evicted
        for mac, delta, ifindex, vlan, created_ns in self._counters.step(self.probe.read_counters()):
            # a new device is found here: first seen when the kernel made its entry
            first_seen = (created_ns + self._boot_offset_ns) // 1000 if created_ns else now
            device = self.device(mac, min(first_seen, now), ifindex, vlan)
            for k, v in delta.items():
                device.counters[k] = device.counters.get(k, 0) + v
            if delta.get("tcp_syns"):
                self._obs_syns[mac] = self._obs_syns.get(mac, 0) + delta["tcp_syns"]
            device.last_seen_usec = now
            self._dirty_counters.add(mac)
            if sent_frames(delta):
                self._sent(device)
        self.activity.count("kernel_evicted", self._counters.evicted - evicted_before)

    def _sent(self, device: Device) -> None:
        """`device` sent frames in this tick: a second tick of sending (and two frames at least)
        confirms it -- it kept talking, which one forged frame per MAC never does."""
        mac = device.mac
        before = self._sent_tick.get(mac)
        self._sent_tick[mac] = self._tick
        if device.confirmed or before is None or before == self._tick:
            return
        if sent_frames(device.counters) >= 2:
            device.confirmed = True
            self._dirty.add(mac)
            self._obs_confirmed.append(mac)  # the fact is taken at the observation: addresses by then

    def reconcile_owners(self) -> None:
        """After records were lost (the ring full, or a device's snippets beyond its budget), the
        kernel's own table of who answers for each address (ip_owner) is read and every move of
        a known address the lost records would have told is applied: a flood of ARP frames must
        not hide the one that moves a known address to the attacker (an ARP spoof inside a
        flood). Costs one map read, only in a tick after a loss."""
        read = getattr(self.probe, "read_address_bindings", None)
        losses = self.probe.losses()
        lost = losses.ring_full + losses.throttled
        if read is None or lost == self._ring_lost_seen:
            return
        self._ring_lost_seen = lost
        now = self._now_usec()
        for address, mac in read():
            owner = self.owners.owner.get(address)
            if owner is not None and owner != mac:  # a move; a lost first binding is only detail
                self.bind(mac, address, now, from_arp_or_ndp=True)

    def bound(self) -> None:
        """At most devices.max_devices devices (inventory_bounds.py), and idle ones forgotten."""
        for mac in evictions(self.devices, self.cfg.max_devices, self._obs_new):
            self.evicted += 1
            self.activity.count("evicted")
            self._drop(mac)
        if self.clock() - self._last_expiry >= EXPIRE_EVERY_SEC:
            self._last_expiry = self.clock()
            for mac in expired(self.devices, self._now_usec(), self.cfg.expire_after_sec * 1_000_000,
                               self.cfg.unconfirmed_expire_sec * 1_000_000):
                self.expired += 1
                self.activity.count("expired")
                self._drop(mac)

    def _drop(self, mac: str) -> None:
        device = self.devices.pop(mac)
        log.debug("forgetting device %s (%s, last seen %d)", mac,
                  "confirmed" if device.confirmed else "unconfirmed", device.last_seen_usec)
        if mac in self._obs_new and self._obs_new[mac] is None:
            self._obs_new[mac] = self._new_device_fact(device)  # still new in this tick's observation
        self.addresses.remove_device(device)
        self.owners.forget(mac)
        self.metadata.forget(mac)
        self._sent_tick.pop(mac, None)
        self._dirty.discard(mac)
        self._dirty_counters.discard(mac)
        if mac in self._stored:  # a flood's MAC made and dropped between two saves never was
            self._deleted.add(mac)

    def save(self, everything: bool = False) -> None:
        """One transaction for everything that changed since the last save: names only when
        they changed, counters apart (a busy device's counters change every tick); unconfirmed
        devices only once they are a minute old, unless `everything` (a clean stop)."""
        self._last_save = self.clock()
        for hook in self.save_hooks:
            try:
                hook()
            except Exception:  # another file's trouble must not cost the inventory its save
                log.exception("save hook failed")
        if self.store is None or not (self._dirty or self._dirty_counters or self._deleted):
            return
        old_enough = self._now_usec() - UNCONFIRMED_SAVE_DELAY_USEC
        due = [mac for mac in self._dirty | self._dirty_counters if mac in self.devices
               and (everything or self.devices[mac].confirmed or self.devices[mac].first_seen_usec <= old_enough)]
        metadata = [self.devices[mac] for mac in due if mac in self._dirty]
        counters = [self.devices[mac] for mac in due if mac in self._dirty_counters]
        if not (metadata or counters or self._deleted):
            return
        try:
            self.store.save(metadata=metadata, counters=counters, deleted=sorted(self._deleted))
        except StoreError as e:  # a full disk: keep the changes and try again next interval
            log.error("cannot save the inventory: %s", e)
            return
        self._stored -= self._deleted
        self._stored.update(d.mac for d in metadata)
        self._dirty.difference_update(due)
        self._dirty_counters.difference_update(due)
        self._deleted.clear()

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
            self._obs_new[mac] = None
            self._deleted.discard(mac)  # back after being forgotten: its row is written again
            self._dirty.add(mac)
            self._dirty_counters.add(mac)
            self.activity.count("new")
            log.debug("new device %s (%s) on %s", mac, device.vendor or "unknown vendor", device.interface or "?")
        elif ifindex:
            name = self.if_name(ifindex)
            if name and name != device.interface:
                device.interface = name
                self._dirty.add(mac)
        return device

    def apply(self, ev: DeviceEvent) -> None:
        if ev.kind == "new_device":  # the classifier no longer sends these (collect finds new devices)
            self.device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
        elif ev.kind == "address":
            self.bind(ev.mac, ev.saddr, ev.timestamp_usec, ev.ifindex, ev.vlan, from_arp_or_ndp=True)
        elif ev.kind == "pattern":
            self._pattern(ev)
        elif ev.kind == "snippet":
            self.metadata.apply(ev)

    def _pattern(self, ev: DeviceEvent) -> None:
        if ev.transport in SWEEPS:  # an address it asked for (ARP, echo): not a peer it talks to
            self.device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
            if not owners(self.addresses, self.devices, ev.daddr):
                self._obs_probes.add(ev.mac, ev.transport, ev.daddr, 0, 0)
            return
        device = self.device(ev.mac, ev.timestamp_usec, ev.ifindex, ev.vlan)
        device.peers += 1
        self._obs_peers.setdefault(ev.mac, set()).add(ev.daddr)
        self._obs_ports.setdefault(ev.mac, set()).add((ev.transport, ev.dport))
        self._obs_probes.add(ev.mac, ev.transport, ev.daddr, ev.sport, ev.dport)
        peer = {"address": ev.daddr, "port": ev.dport, "transport": ev.transport,
                "name": self.metadata.name_of(ev.mac, ev.daddr)}
        append_bounded(device.recent_peers, peer, MAX_RECENT_PEERS, RECENT_PEERS_BYTES, peer_size)
        self._dirty.add(ev.mac)
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
        address = str(ip)
        if ip.version == 4 and not table and from_arp_or_ndp:
            # its first IPv4 answered for by ARP (a DHCP request is only a wish): a MAC held for it
            # is decided now -- a move if the address was another MAC's (claimed below), else new
            self._obs_ipv4_shown.append(mac)
        if address not in table:
            if len(table) >= MAX_ADDRESSES:  # the least recently used address makes room
                oldest = min(table, key=table.get)
                del table[oldest]
                self.addresses.remove(oldest, mac)
            self.addresses.add(address, mac)
            self.activity.count("address")
            log.debug("device %s uses %s", mac, address)
        table[address] = when  # the kernel reports a binding only when new or moved: rare
        self._dirty.add(mac)
        if from_arp_or_ndp:  # what a device answers for; a DHCP request is only a wish
            change = self.owners.claim(address, mac)
            if change is not None:
                self.activity.count("moved")
                self._obs_changes.append(change)

    # -- queries (read-only) -----------------------------------------------------------------
    def list_devices(self) -> List[Device]:
        return queries.list_devices(self.devices.values())

    def get_device(self, mac_or_ip: str) -> Device:
        return queries.find_device(self.devices, mac_or_ip, self.owners_of)

    def protocol_totals(self) -> Dict[str, int]:
        return queries.protocol_totals(self.devices.values())

    def dropped(self) -> Dict[str, int]:
        """What the device path's bounded tables dropped since the start (D-Bus Dropped)."""
        answers = self.metadata.questions.counts
        return {"devices_evicted": self.evicted, "devices_expired": self.expired,
                "kernel_device_entries_evicted": self.kernel_evicted,
                "device_snippets_throttled": self.probe.losses().throttled,
                "dns_answers_unsolicited": answers.unsolicited, "dns_questions_dropped": answers.questions_dropped,
                "dhcp_replies_dropped": self.metadata.dhcp_replies_dropped,
                "device_probes_dropped": self._obs_probes.dropped,
                "dns_domains_over": self.metadata.dns.domains_over + self.metadata.dns.devices_over}

    def events_lost(self) -> int:
        """Everything the device path lost: records that found the ring full, snippets of a device
        beyond its budget, frames of devices that found no room in the kernel's device LRU,
        records that did not decode."""
        losses = self.probe.losses()
        return losses.ring_full + losses.throttled + losses.devices_full + self.malformed_events

    def malformed_frames(self) -> int:
        """Frames the TC classifier could not parse (D-Bus MalformedFrames)."""
        return self.probe.losses().malformed
