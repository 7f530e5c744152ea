"""The TC classifier, loaded through bcc and attached by netwatchd/kernel/tc_attach.py: TCX
links where the kernel has them (6.6+), else clsact direct-action filters. The only bcc importer
on the device path.
"""
from __future__ import annotations

import ctypes
import errno
import logging
from typing import Dict, List, Optional, Tuple

from netwatchd.kernel import features
from netwatchd.kernel import headers as kernel_env
from netwatchd.kernel.tc_attach import Attachment, TcAttacher
from netwatchd.config import DevicesConfig
from netwatchd.kernel.bpf_util import (QUIET_KERNEL_HEADER_WARNINGS, ProbeError, RingReader, bpf_source_dir,
                                       return_freed_heap, ring_pages, table_items)
from netwatchd.devices.records import (LOSS_DEVICES, LOSS_MALFORMED, LOSS_RING, LOSS_THROTTLED, SETTING_INDEX,
                                      CounterReadings, DeviceLosses,
                                      address_bindings, beacon_pair, readings_from_raw)
from netwatchd.interfaces import Interface

log = logging.getLogger(__name__)

PATTERN_EVENT_KIND = 3  # NW_EV_PATTERN in bpf/device.h: the kind byte of every seen_patterns key


class DeviceProbe:
    def __init__(self, cfg: DevicesConfig, beacon_pairs: int = 0, state_dir: Optional[str] = None):
        self.cfg = cfg
        self.beacon_pairs = beacon_pairs  # size of the beacon_pairs LRU; 0: beacons off, no map
        self._bpf = None
        self._fds: Dict[str, int] = {}  # nw_tc_ingress / nw_tc_egress program fds
        self._links: Dict[Tuple[str, int], Attachment] = {}  # (name, ifindex) -> our attachment
        self._ring: RingReader | None = None
        self._counter_buffers = None  # the device map's batch-read buffers (read_counters)
        self._owner_buffers = None  # ip_owner's (read_address_bindings)
        # where the clsact path remembers which qdiscs it created (survives a SIGKILL)
        self.tc = TcAttacher(cfg.tc_attach, features.current().tcx, state_dir)

    def program_fds(self) -> Dict[str, int]:
        """Loaded program name -> fd, for their run-time statistics (/proc/self/fdinfo)."""
        return dict(self._fds)

    def start(self) -> None:
        kernel_env.kernel_headers()
        from bcc import BPF

        bpf_dir = bpf_source_dir()
        cflags = [
            f"-I{bpf_dir}",
            f"-DNW_MAX_DEVICES={self.cfg.max_devices}",
            f"-DNW_MAX_PATTERNS={self.cfg.max_patterns}",
            f"-DNW_DEV_RING_PAGES={ring_pages(self.cfg.ring_buffer_kib)}",
            f"-DNW_BEACON_PAIRS={self.beacon_pairs}",
            f"-DNW_SNIPPET_BUDGET={self.cfg.snippet_budget_per_sec}",
        ] + QUIET_KERNEL_HEADER_WARNINGS
        try:
            self._bpf = BPF(src_file=str(bpf_dir / "device.bpf.c").encode(), cflags=cflags)
            for name in ("nw_tc_ingress", "nw_tc_egress"):
                self._fds[name] = self._bpf.load_func(name.encode(), BPF.SCHED_CLS).fd
        except Exception as e:  # bcc raises bare Exception on compile/load errors
            raise ProbeError(f"cannot load {bpf_dir / 'device.bpf.c'}: {e}") from None
        self.apply_settings(self.cfg)
        self._ring = RingReader(self._bpf, b"dev_events")
        return_freed_heap()

    def stop(self) -> None:
        for key in list(self._links):
            self.detach(*key)
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def apply_settings(self, cfg: DevicesConfig) -> None:
        """Privacy switches live in a map: a reload changes them without recompiling."""
        table = self._bpf[b"dev_settings"]
        for key, index in SETTING_INDEX.items():
            table[ctypes.c_int(index)] = ctypes.c_uint32(1 if getattr(cfg, key) else 0)
        self.cfg = cfg

    # -- interfaces --------------------------------------------------------------------------
    def attach(self, iface: Interface) -> None:
        self._links[(iface.name, iface.ifindex)] = self.tc.attach(iface.name, iface.ifindex, self._fds)

    def detach(self, name: str, ifindex: int) -> None:
        att = self._links.pop((name, ifindex), None)
        if att is not None:
            self.tc.detach(att)

    def attach_path(self) -> str:
        """"tcx" or "clsact": how the classifier is attached (shown in ProgramsAttached)."""
        return self.tc.path

    def attached(self) -> List[Tuple[str, int]]:
        return sorted(self._links)

    # -- reading -----------------------------------------------------------------------------
    def drain(self) -> List[bytes]:
        return self._ring.drain()

    def read_counters(self) -> CounterReadings:
        """Cumulative kernel counters of every device in the map, as arrays: one batch syscall
        and no Python object per device (the map holds thousands after a MAC flood)."""
        table = self._bpf[b"devices"]
        if self._counter_buffers is None:  # max_devices x CPUs: allocated once, reused every tick
            self._counter_buffers = table._alloc_keys_values(alloc_k=True, alloc_v=True)
        keys, values, n = batch_read(table, self._counter_buffers)
        return readings_from_raw(keys, values, n, table.total_cpu)

    def read_address_bindings(self) -> List[Tuple[str, str]]:
        """(address, MAC) of every binding in the kernel's ip_owner LRU: who answered for each
        address last (ARP/NDP), read after the ring lost events (DeviceMonitor.reconcile_owners)."""
        table = self._bpf[b"ip_owner"]
        if self._owner_buffers is None:
            self._owner_buffers = table._alloc_keys_values(alloc_k=True, alloc_v=True)
        keys, values, n = batch_read(table, self._owner_buffers)
        return address_bindings(keys, values, n)

    def read_beacon_starts(self) -> Dict[Tuple[str, str, int], Tuple[int, int, int]]:
        """{(mac, peer, port): (last_ns, prev_ns, count)} of the beacon_pairs LRU ({} when off)."""
        if not self.beacon_pairs:
            return {}
        return {beacon_pair(k): (v.last_ns, v.prev_ns, v.count) for k, v in table_items(self._bpf[b"beacon_pairs"])}

    def losses(self) -> DeviceLosses:
        table = self._bpf[b"dev_losses"]

        def read(index: int) -> int:
            return int(sum(table[ctypes.c_int(index)]))

        return DeviceLosses(ring_full=read(LOSS_RING), devices_full=read(LOSS_DEVICES),
                            malformed=read(LOSS_MALFORMED), throttled=read(LOSS_THROTTLED))

    # -- known patterns across restarts (netwatchd/store/patterns.py) ------------------------
    def remember_patterns(self, patterns) -> int:
        """Loads known (device, peer, port, transport) patterns into the first-seen LRU before
        any interface is attached, so a restart does not report a device's usual peers as new.
        `patterns` come oldest first and are at most max_patterns (the LRU keeps the newest if
        not). Returns how many the kernel took."""
        table = self._bpf[b"seen_patterns"]
        keys = []
        for p in patterns:
            key = table.Key()
            key.mac[:] = list(bytes.fromhex(p.mac.replace(":", "")))
            key.kind, key.transport, key.port, key.family = PATTERN_EVENT_KIND, p.transport, p.port, p.family
            key.addr[:] = list(p.address_bytes())
            keys.append(key)
        if not keys:
            return 0
        try:  # one syscall (kernel >= 5.6); one per key otherwise
            key_array = (table.Key * len(keys))(*keys)
            leaf_array = (table.Leaf * len(keys))(*([1] * len(keys)))
            table.items_update_batch(key_array, leaf_array)
        except Exception as e:  # noqa: BLE001 - bcc raises bare Exception; fall back
            log.debug("batch update of seen_patterns refused (%s); one by one", e)
            for key in keys:
                table[key] = table.Leaf(1)
        return len(keys)


def batch_read(table, buffers) -> Tuple[memoryview, memoryview, int]:
    """Every (key, value) of a bcc hash table into two flat buffers (`buffers`: bcc's
    (capacity, keys, values) for the whole map), by BPF_MAP_LOOKUP_BATCH (the kernel's batch
    read, 5.6+); key by key if the kernel refuses it. Values of a per-CPU map are one per
    possible CPU, side by side, as the kernel lays them out."""
    from bcc.libbcc import lib

    capacity, keys, values = buffers
    key_size, value_size = ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf)
    batch, count, total = ctypes.c_uint32(0), ctypes.c_uint32(0), 0
    while total < capacity.value:
        count.value = capacity.value - total
        res = lib.bpf_lookup_batch(table.map_fd, ctypes.byref(batch) if total else None, ctypes.byref(batch),
                                   ctypes.byref(keys, key_size * total), ctypes.byref(values, value_size * total),
                                   ctypes.byref(count))
        err = ctypes.get_errno()
        total += count.value
        if res != 0:
            if err == errno.ENOENT:
                break  # the end of the map
            return _read_one_by_one(table, keys, values)
        if count.value == 0:
            break
    return memoryview(keys).cast("B"), memoryview(values).cast("B"), total


def _read_one_by_one(table, keys, values) -> Tuple[memoryview, memoryview, int]:
    n = 0
    for key, value in ((k, table[k]) for k in table.keys()):
        if n == len(keys):
            break
        keys[n], values[n] = key, value
        n += 1
    return memoryview(keys).cast("B"), memoryview(values).cast("B"), n
