"""Slow scans (pure): per device, over a sliding window of alerts.scan_window_sec (300 s), the
distinct ports it probed on each destination host and the distinct hosts it probed on each port.

  port_scan   one device reached alerts.scan_ports_per_host (15) distinct ports of one host
              within the window (a vertical scan), however slowly: one port every 3 s is a
              fan_out of nothing in any tick, and 100 of them in five minutes here.
  host_scan   one device reached alerts.scan_hosts_per_port (25) distinct hosts of the local
              networks on one port (a horizontal scan: looking for every SSH or SMB server).
  address_sweep one device asked, by ARP or ICMP/ICMPv6 echo requests, for scan_hosts_per_port
              (25) local addresses that no known device uses (`nmap -sn` of a /24): host
              discovery without touching a port; the alert names the range. Asking for the
              gateway or a known peer is use, not a sweep (netwatchd/devices/probes.py).
The numbers are Zeek's (scan.zeek: 15 ports, 25 hosts per 5 minutes).

Input: the observation's `device_probes`, the (host, port, transport) pairs each device probed
for the first time this tick (netwatchd/devices/probes.py: TCP SYNs, UDP from client ports).
Only hosts of the local networks (RFC 1918, 100.64/10, link-local, fc00::/7) count for
host_scan: a browser reaches dozens of public addresses on 443 in five minutes, a scan of the
LAN for one service is lateral movement. port_scan counts every unicast host.

One alert per (device, kind) and tick: the target with the largest count, the others named
in `other_targets`; then each (device, kind, target) is quiet for alerts.cooldown_sec. A device
whose fan_out is cooling is quiet here too: a fast scan is one fan_out, not a fan_out and a
port_scan; and the alert of a device whose tick is above alerts.fan_out_floor waits a tick (its
fan_out may need consecutive_ticks), then is raised unless that fan_out came. Learning:
nothing is recorded during the learning period (every pattern of the LAN is first-seen then,
and a window filled then would alert at its end).

The window: one chunk per tick (its time and rows: device slot, transport and port, host as
two 64-bit halves; 22 bytes a row), dropped whole when it leaves the window, and three sorted
multisets of 64-bit keys (SortedCounts) kept as the chunks come and go: (device, host, port)
hashes (a pair the kernel reports again, after its LRU forgot it, counts once), (device, host)
-> distinct ports, (device, port) -> distinct local hosts. A tick costs sorted inserts and
deletes (memmove) of those arrays and searches for the tick's new keys, not a pass over every
device (bench/scan_window_bench.py). Hosts are folded to 48 bits in the keys: two IPv6 hosts of
one device could share a key with a chance of about n^2 / 2^49, n its hosts in the window.

Bounds -- any device on the LAN can forge source MACs and addresses and fill this:
- at most MAX_PAIRS_PER_DEVICE pairs per device in the window: a device's new pairs beyond are
  dropped (counted) until its oldest leave the window; what it probed already stays counted,
  so a bar reached stays reached;
- at most MAX_DEVICES devices and MAX_PAIRS_TOTAL pairs in all (2^20, about 50 MB: 46 bytes a
  pair in arrays; MAX_DEVICES x MAX_PAIRS_PER_DEVICE would be 16M pairs, 750 MB, past the unit's
  MemoryMax): a new device, or a tick's pairs beyond the total, take the room of the devices
  that probed least recently, whose pairs are forgotten (counted); what does not fit even then
  (every device probing in the same tick) is dropped, the pairs of the devices with the most in
  the window first, so a flooder cannot crowd out a slow scanner's few. A flood of forged MACs
  thus costs the idle devices their windows first; a scanner hiding its scan in such a flood
  may lose its window, but the flood itself is a mac_flood or a fan_out.
The windows are keyed by source ("device:<mac>", the subject of the alert; the core hands in
devices only: a command's connect() records are every call, not first-seen ones).
Nothing is saved across restarts: the window is five minutes, and after a restart a scan's
pairs already probed are known patterns (patterns.sqlite3), not first-seen again.
"""
from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Iterable, List, Sequence, Tuple

import numpy as np

from netwatchd.alerting.alerts import Alert, AlertIds
from netwatchd.column_hash import splitmix

MAX_PAIRS_PER_DEVICE = 4096
MAX_DEVICES = 4096
MAX_PAIRS_TOTAL = 1 << 20  # ~50 MB of arrays: far below the unit's MemoryMax=768M
SAMPLES = 8  # ports or hosts named in an alert
PRUNE_EVERY_USEC = 60_000_000  # spent cooldowns go once a minute
TRANSPORTS = {"tcp": 1, "udp": 2, "arp": 3, "icmp": 4, "icmpv6": 5}
SWEEPS = (3, 4, 5)  # asking for addresses (ARP requests, echo requests), port 0: address_sweep's
TRANSPORT_NAMES = {v: k for k, v in TRANSPORTS.items()}
LOCAL_BIT = 1 << 24  # in a row's tport: the host is on a local network (host_scan counts it)
TPORT_MASK = LOCAL_BIT - 1
ROW = np.dtype([("dev", "<u2"), ("tport", "<u4"), ("hi", "<u8"), ("lo", "<u8")])  # packed, 22 bytes
# the local networks (host_scan counts only these): IPv4 ranges as integers; IPv6 fc00::/7 and
# fe80::/10 are tested on the address's first bytes (_address)
LOCAL_V4 = tuple((int(n.network_address), int(n.broadcast_address)) for n in map(ipaddress.ip_network, (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16")))
V4_MAPPED = 0xFFFF << 32
_U64 = np.uint64


class SortedCounts:
    """A multiset of uint64 keys: sorted unique keys and their counts (int32)."""

    def __init__(self):
        self.keys = np.empty(0, np.uint64)
        self.counts = np.empty(0, np.int32)

    def __len__(self) -> int:
        return len(self.keys)

    def _find(self, keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self.keys, keys)
        found = np.zeros(len(keys), bool)
        inside = pos < len(self.keys)
        found[inside] = self.keys[pos[inside]] == keys[inside]
        return pos, found

    def get(self, keys: np.ndarray) -> np.ndarray:
        pos, found = self._find(keys)
        out = np.zeros(len(keys), np.int64)
        out[found] = self.counts[pos[found]]
        return out

    def add(self, keys: np.ndarray) -> None:
        unique, n = np.unique(keys, return_counts=True)
        pos, found = self._find(unique)
        self.counts[pos[found]] += n[found].astype(np.int32)
        self.keys = np.insert(self.keys, pos[~found], unique[~found])
        self.counts = np.insert(self.counts, pos[~found], n[~found].astype(np.int32))

    def remove(self, keys: np.ndarray) -> None:
        """Keys that are there (each as often as it is there at most)."""
        if not len(keys):
            return
        unique, n = np.unique(keys, return_counts=True)
        pos, found = self._find(unique)
        self.counts[pos[found]] -= n[found].astype(np.int32)
        keep = self.counts > 0
        if not keep.all():
            self.keys, self.counts = self.keys[keep], self.counts[keep]

    def nbytes(self) -> int:
        return self.keys.nbytes + self.counts.nbytes


def host_keys(rows: np.ndarray) -> np.ndarray:
    """(device slot, host folded to 48 bits): what ports are counted under."""
    folded = splitmix(rows["lo"] ^ splitmix(rows["hi"])) >> _U64(16)
    return (rows["dev"].astype(np.uint64) << _U64(48)) | folded


def port_keys(rows: np.ndarray) -> np.ndarray:
    """(device slot, transport and port): what local hosts are counted under."""
    return (rows["dev"].astype(np.uint64) << _U64(48)) | (rows["tport"] & TPORT_MASK).astype(np.uint64)


def pair_keys(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of (device slot, host, transport and port): what makes a pair distinct."""
    return splitmix(host_keys(rows) ^ splitmix(port_keys(rows)))


def _local(rows: np.ndarray) -> np.ndarray:
    return (rows["tport"] & LOCAL_BIT) != 0


def _sweeping(rows: np.ndarray) -> np.ndarray:
    """Rows of ARP or echo requests: targets asked for, not services probed."""
    return np.isin((rows["tport"] & TPORT_MASK) >> 16, SWEEPS)


def _services(rows: np.ndarray) -> np.ndarray:
    return ~_sweeping(rows)


def host_text(hi: int, lo: int) -> str:
    ip = ipaddress.IPv6Address((int(hi) << 64) | int(lo))
    return str(ip.ipv4_mapped or ip)


def port_text(tport: int) -> str:
    return f"{int(tport) & 0xFFFF}/{TRANSPORT_NAMES.get((int(tport) & TPORT_MASK) >> 16, '?')}"


def _address(host: str) -> Tuple[int, bool]:
    """(the address as a 128-bit integer, IPv4 mapped into IPv6; on a local network?).
    inet_pton, not ipaddress: this runs for every probe of a tick (13k at 4096 busy devices)."""
    if ":" not in host:
        v4 = int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
        return V4_MAPPED | v4, any(low <= v4 <= high for low, high in LOCAL_V4)
    raw = socket.inet_pton(socket.AF_INET6, host)
    return int.from_bytes(raw, "big"), raw[0] & 0xFE == 0xFC or (raw[0] == 0xFE and raw[1] & 0xC0 == 0x80)


def _row(slot: int, host: str, port: int, transport: str):
    """One row, or None for what is not an address and port of TCP or UDP (or an ARP/echo target)."""
    kind = TRANSPORTS.get(transport)
    if kind is None or not isinstance(port, int) or not 0 <= port <= 0xFFFF or not isinstance(host, str):
        return None
    try:
        value, local = _address(host)
    except (OSError, ValueError):
        return None
    return slot, (LOCAL_BIT if local else 0) | (kind << 16) | port, value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF


@dataclass
class Chunk:
    time_usec: int
    rows: np.ndarray  # ROW


@dataclass(frozen=True)
class Bars:
    """What a tick is judged by (AlertsConfig's scan_* keys and cooldown_sec)."""

    window_sec: int
    ports_per_host: int
    hosts_per_port: int
    cooldown_sec: int


class ScanWindows:
    def __init__(self, max_devices: int = MAX_DEVICES, max_pairs: int = MAX_PAIRS_PER_DEVICE,
                 max_total: int = MAX_PAIRS_TOTAL):
        self.max_devices, self.max_pairs, self.max_total = max_devices, max_pairs, max_total
        self.chunks: Deque[Chunk] = deque()
        # source ("device:<mac>", "command:<name>") -> slot, least recently probing first
        self.slots: "OrderedDict[str, int]" = OrderedDict()
        self.free: List[int] = list(range(max_devices - 1, -1, -1))
        self.rows_of = np.zeros(max_devices, np.int64)  # pairs in the window per slot
        self.seen = SortedCounts()  # pair hashes
        self.ports_of_host = SortedCounts()  # (device, host) -> distinct ports
        self.hosts_of_port = SortedCounts()  # (device, port) -> distinct local hosts
        self.last_alert: Dict[Tuple[str, str, str], int] = {}  # (source, kind, target) -> usec
        self._pruned_at = 0
        # alerts waiting a tick for a fan_out that may cover them: (slot, kind) -> {key: row}
        self._deferred: Dict[Tuple[int, str], Dict[int, np.void]] = {}
        self.dropped = 0  # pairs refused (a full device, the total reached) or forgotten with their device

    # -- a tick -------------------------------------------------------------------------------
    def tick(self, probes: Dict[str, List[Sequence]], now: int, bars: Bars, ids: AlertIds, alerting: bool,
             quiet: Callable[[str], bool] = lambda source: False,
             pending: Callable[[str], bool] = lambda source: False) -> List[Alert]:
        """This tick's probes ({source: [[host, port, transport], ...]}, a source being
        "device:<mac>" or "command:<name>") in, its alerts out. `alerting` false (learning,
        alerts off): the window only ages. `quiet(source)`: a source another alert already covers
        (its fan_out, its connect_rate); `pending(source)`: one that alert may cover next tick
        (waiting for its second anomalous tick): its alert waits a tick, then is raised unless
        `quiet` by then."""
        self._expire(now - bars.window_sec * 1_000_000)
        self._prune_cooldowns(now, bars.cooldown_sec)
        if not alerting:
            self._deferred = {}
            return []
        rows = self._new_rows(probes) if probes else np.empty(0, ROW)
        if len(rows):
            self._add(rows, now)
        if not len(rows) and not self._deferred:
            return []
        return self._alerts(rows, now, bars, ids, quiet, pending)

    def pairs(self) -> int:
        return int(self.rows_of.sum())

    def nbytes(self) -> int:
        return (sum(c.rows.nbytes for c in self.chunks) + self.seen.nbytes() + self.ports_of_host.nbytes()
                + self.hosts_of_port.nbytes() + self.rows_of.nbytes)

    # -- the window -----------------------------------------------------------------------------
    def _expire(self, cutoff_usec: int) -> None:
        """Chunks at or before the cutoff leave the window, their pairs with them."""
        old = []
        while self.chunks and self.chunks[0].time_usec <= cutoff_usec:
            old.append(self.chunks.popleft().rows)
        if old:
            self._forget(np.concatenate(old))

    def _forget(self, rows: np.ndarray) -> None:
        self.seen.remove(pair_keys(rows))
        self.ports_of_host.remove(host_keys(rows[_services(rows)]))
        self.hosts_of_port.remove(port_keys(rows[_local(rows)]))
        self.rows_of -= np.bincount(rows["dev"], minlength=self.max_devices)

    def _add(self, rows: np.ndarray, now: int) -> None:
        self.chunks.append(Chunk(now, rows))
        self.seen.add(pair_keys(rows))
        self.ports_of_host.add(host_keys(rows[_services(rows)]))
        self.hosts_of_port.add(port_keys(rows[_local(rows)]))
        self.rows_of += np.bincount(rows["dev"], minlength=self.max_devices)

    def _new_rows(self, probes: Dict[str, List[Sequence]]) -> np.ndarray:
        """The tick's pairs not in the window yet, within each device's bound."""
        slots = self._assign_slots(list(probes))
        made = []
        for source, pairs in probes.items():
            slot = slots.get(source)
            if slot is None:  # more new devices in one tick than MAX_DEVICES
                self.dropped += len(pairs)
                continue
            made.extend(r for r in (_row(slot, *p[:3]) for p in pairs if len(p) >= 3) if r is not None)
        rows = np.array(made, dtype=ROW)
        keys = pair_keys(rows)
        _, first = np.unique(keys, return_index=True)  # a pair twice in the tick counts once
        fresh = np.zeros(len(rows), bool)
        fresh[first] = True
        fresh &= self.seen.get(keys) == 0
        return self._within_total(self._within_bound(rows[fresh]), set(slots))

    def _within_bound(self, rows: np.ndarray) -> np.ndarray:
        """At most max_pairs per device in the window; the tick's pairs beyond are dropped."""
        order = np.argsort(rows["dev"], kind="stable")
        devs = rows["dev"][order]
        starts = np.flatnonzero(np.r_[True, devs[1:] != devs[:-1]]) if len(devs) else np.empty(0, np.int64)
        rank = np.arange(len(devs)) - np.repeat(starts, np.diff(np.r_[starts, len(devs)]))
        keep = np.zeros(len(rows), bool)
        keep[order[self.rows_of[devs] + rank < self.max_pairs]] = True
        self.dropped += int((~keep).sum())
        return rows[keep]

    def _within_total(self, rows: np.ndarray, probing: set) -> np.ndarray:
        """At most max_total pairs in all: the devices that probed least recently (not this
        tick's) are forgotten to make room; what still does not fit is dropped."""
        room = self.max_total - self.pairs()
        taken = []
        while room < len(rows) and self.slots and next(iter(self.slots)) not in probing:
            _, slot = self.slots.popitem(last=False)
            taken.append(slot)
            room += int(self.rows_of[slot])
        if taken:
            self._forget_devices(taken)
        if room < len(rows):  # the devices with the fewest pairs in the window keep theirs first
            room = max(room, 0)
            self.dropped += len(rows) - room
            rows = rows[np.sort(np.argsort(self.rows_of[rows["dev"]], kind="stable")[:room])]
        return rows

    def _assign_slots(self, sources: List[str]) -> Dict[str, int]:
        """Each probing device's slot; a new one takes a free slot, else the slot of the device
        that probed least recently (forgetting its pairs). This tick's devices are never taken."""
        for source in sources:
            if source in self.slots:
                self.slots.move_to_end(source)
        new = [source for source in sources if source not in self.slots]
        takeable = len(self.slots) - (len(sources) - len(new))
        taken = [self.slots.popitem(last=False) for _ in range(min(len(new) - len(self.free), takeable))]
        if taken:
            self._forget_devices([slot for _, slot in taken])
        for source in new:
            if not self.free:
                break
            self.slots[source] = self.free.pop()
        return {source: self.slots[source] for source in sources if source in self.slots}

    def _forget_devices(self, slots: List[int]) -> None:
        gone = np.asarray(slots, dtype=np.uint16)
        self.dropped += int(self.rows_of[gone].sum())
        for chunk in self.chunks:
            theirs = np.isin(chunk.rows["dev"], gone)
            if theirs.any():
                self._forget(chunk.rows[theirs])
                chunk.rows = chunk.rows[~theirs]
        self.free.extend(slots)

    # -- alerts -------------------------------------------------------------------------------
    def _alerts(self, rows: np.ndarray, now: int, bars: Bars, ids: AlertIds, quiet, pending) -> List[Alert]:
        """The targets at a bar: this tick's (the keys its rows touched) and last tick's deferred."""
        sources = {slot: source for source, slot in self.slots.items()}
        touched, self._deferred = self._deferred, {}
        services, local = rows[_services(rows)], rows[_local(rows)]
        asked = local[_sweeping(local)]
        local = local[_services(local)]
        for kind, keys, source, counter, bar in (
                ("port_scan", host_keys(services), services, self.ports_of_host, bars.ports_per_host),
                ("host_scan", port_keys(local), local, self.hosts_of_port, bars.hosts_per_port),
                ("address_sweep", port_keys(asked), asked, self.hosts_of_port, bars.hosts_per_port)):
            _, first = np.unique(keys, return_index=True)
            for i in first[counter.get(keys[first]) >= bar]:  # only keys at the bar cost Python work
                touched.setdefault((int(source["dev"][i]), kind), {})[int(keys[i])] = source[i]
        alerts = []
        for (slot, kind), targets in sorted(touched.items()):
            counter, bar = ((self.ports_of_host, bars.ports_per_host) if kind == "port_scan"
                            else (self.hosts_of_port, bars.hosts_per_port))  # host_scan, address_sweep
            keys = list(targets)
            counts = counter.get(np.asarray(keys, dtype=np.uint64))
            found = [(int(c), k, targets[k]) for k, c in zip(keys, counts) if c >= bar]
            if found and slot in sources:  # a source forgotten meanwhile has nothing left to report
                alerts += self._raise(sources[slot], slot, kind, found, now, bars, ids, quiet, pending)
        return alerts

    def _raise(self, source: str, slot: int, kind: str, found, now: int, bars: Bars, ids: AlertIds, quiet,
               pending) -> List[Alert]:
        """One alert for a device's targets of one kind at the bar: the largest count first."""
        target = (lambda r: host_text(r["hi"], r["lo"])) if kind == "port_scan" else (lambda r: port_text(r["tport"]))
        cooldown = bars.cooldown_sec * 1_000_000
        due = [(count, key, target(row)) for count, key, row in sorted(found, key=lambda f: (-f[0], f[1]))
               if now - self.last_alert.get((source, kind, target(row)), -cooldown) >= cooldown]
        if not due or quiet(source):
            return []
        if pending(source):
            self._deferred[(slot, kind)] = {key: row for _, key, row in found}
            return []
        for _, _, name in due:
            self.last_alert[(source, kind, name)] = now
        count, key, name = due[0]
        others = " ".join(n for _, _, n in due[1:])
        what, who = source.split(":", 1)  # device, its MAC; command, its name
        common = {"mac" if what == "device" else "command": who, "count": str(count),
                  "window_sec": str(bars.window_sec), "other_targets": others}
        more = f"; more targets at the bar: {others}" if others else ""
        if kind == "address_sweep":
            return [self._sweep(source, slot, key, count, name, now, bars, ids, common, more)]
        if kind == "port_scan":
            samples = self._sample_ports(slot, key)
            message = (f"{what} {who} probed {count} ports of {name} within {bars.window_sec} s "
                       f"(e.g. {samples}): a port scan{more}")
            return [Alert(ids.next(), "port_scan", source, now, message, float(count),
                          float(bars.ports_per_host), 0.0, {"host": name, "ports": samples, **common})]
        samples = self._sample_hosts(slot, key)
        message = (f"{what} {who} probed {count} local hosts on port {name} within {bars.window_sec} s "
                   f"(e.g. {samples}): a host scan{more}")
        return [Alert(ids.next(), "host_scan", source, now, message, float(count),
                      float(bars.hosts_per_port), 0.0, {"port": name, "hosts": samples, **common})]

    def _sweep(self, source: str, slot: int, key: int, count: int, name: str, now: int, bars: Bars,
               ids: AlertIds, common: Dict[str, str], more: str) -> Alert:
        """address_sweep: the local addresses a device asked for (ARP, echo), none a known device's
        (netwatchd/devices/probes.py), named by their range."""
        hosts = self._local_hosts(slot, key)
        first, last = host_text(*hosts[0]), host_text(*hosts[-1])
        how = name.split("/", 1)[1]
        samples = " ".join(host_text(hi, lo) for hi, lo in hosts[:SAMPLES])
        what, who = source.split(":", 1)
        message = (f"{what} {who} asked for {count} local addresses no known device uses, by {how}, within "
                   f"{bars.window_sec} s ({first} .. {last}): an address sweep{more}")
        return Alert(ids.next(), "address_sweep", source, now, message, float(count), float(bars.hosts_per_port),
                     0.0, {"by": how, "first": first, "last": last, "hosts": samples, **common})

    def _rows_of_slot(self, slot: int) -> np.ndarray:
        return np.concatenate([c.rows[c.rows["dev"] == slot] for c in self.chunks])

    def _sample_ports(self, slot: int, key: int) -> str:
        rows = self._rows_of_slot(slot)
        rows = rows[_services(rows)]
        tports = np.unique(rows[host_keys(rows) == _U64(key)]["tport"] & TPORT_MASK)
        return " ".join(port_text(t) for t in sorted(tports, key=lambda t: int(t) & 0xFFFF)[:SAMPLES])

    def _local_hosts(self, slot: int, key: int) -> List[Tuple[int, int]]:
        """The local hosts (hi, lo) a device reached under one port key, in address order."""
        rows = self._rows_of_slot(slot)
        mine = rows[(port_keys(rows) == _U64(key)) & _local(rows)]
        return sorted(set(zip(mine["hi"].tolist(), mine["lo"].tolist())))

    def _sample_hosts(self, slot: int, key: int) -> str:
        return " ".join(host_text(hi, lo) for hi, lo in self._local_hosts(slot, key)[:SAMPLES])

    # -- cooldowns ----------------------------------------------------------------------------
    def _prune_cooldowns(self, now: int, cooldown_sec: int) -> None:
        if now - self._pruned_at < PRUNE_EVERY_USEC:
            return
        self._pruned_at = now
        spent = now - cooldown_sec * 1_000_000
        self.last_alert = {k: t for k, t in self.last_alert.items() if t > spent}

    def remember(self, alerts: Iterable[Alert]) -> None:
        """Scans reported before a restart (the restored alert log) stay quiet for their cooldown."""
        for a in alerts:
            target = a.details.get("host" if a.kind == "port_scan" else "port")
            if a.kind in ("port_scan", "host_scan") and target:
                for name in [target] + a.details.get("other_targets", "").split():
                    key = (a.subject, a.kind, name)
                    self.last_alert[key] = max(self.last_alert.get(key, 0), a.timestamp_usec)
