"""The TC classifier, loaded through bcc and attached by netwatchd/kernel/tc_attach.py: TCX
links where the kernel has them (6.6+), else clsact direct-action filters. The only bcc importer
on the device path.
"""
from __future__ import annotations

import ctypes
import logging
from typing import Dict, List, Optional, Tuple

from netwatchd.kernel import features
from netwatchd.kernel.tc_attach import Attachment, TcAttacher
from . import kernel_env
from .config import DevicesConfig
from .bpf_util import PAGE_SIZE, QUIET_KERNEL_HEADER_WARNINGS, ProbeError, bpf_source_dir, return_freed_heap, table_items
from .device_record import LOSS_DEVICES, LOSS_MALFORMED, LOSS_RING, SETTING_INDEX, DevCounters, sum_per_cpu
from .devices import mac_from_bytes
from .interfaces import Interface

log = logging.getLogger(__name__)


class DeviceProbe:
    def __init__(self, cfg: DevicesConfig, state_dir: Optional[str] = None):
        self.cfg = cfg
        self._bpf = None
        self._fds: Dict[str, int] = {}  # nw_tc_ingress / nw_tc_egress program fds
        self._links: Dict[Tuple[str, int], Attachment] = {}  # (name, ifindex) -> our attachment
        self._raw: List[bytes] = []
        # where the clsact path remembers which qdiscs it created (survives a SIGKILL)
        self.tc = TcAttacher(cfg.tc_attach, features.current().tcx, state_dir)

    def program_fds(self) -> Dict[str, int]:
        """Loaded program name -> fd, for their run-time statistics (/proc/self/fdinfo)."""
        return dict(self._fds)

    def start(self) -> None:
        kernel_env.kernel_headers()
        from bcc import BPF

        bpf_dir = bpf_source_dir()
        ring_pages = max(1, self.cfg.ring_buffer_kib * 1024 // PAGE_SIZE)
        cflags = [
            f"-I{bpf_dir}",
            f"-DNW_MAX_DEVICES={self.cfg.max_devices}",
            f"-DNW_MAX_PATTERNS={self.cfg.max_patterns}",
            f"-DNW_DEV_RING_PAGES={ring_pages}",
        ] + QUIET_KERNEL_HEADER_WARNINGS
        try:
            self._bpf = BPF(src_file=str(bpf_dir / "device.bpf.c").encode(), cflags=cflags)
            for name in ("nw_tc_ingress", "nw_tc_egress"):
                self._fds[name] = self._bpf.load_func(name.encode(), BPF.SCHED_CLS).fd
        except Exception as e:  # bcc raises bare Exception on compile/load errors
            raise ProbeError(f"cannot load {bpf_dir / 'device.bpf.c'}: {e}") from None
        self.apply_settings(self.cfg)
        self._bpf[b"dev_events"].open_ring_buffer(self._on_event)
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
    def _on_event(self, _ctx, data, size) -> None:
        self._raw.append(ctypes.string_at(data, size))

    def drain(self) -> List[bytes]:
        self._bpf.ring_buffer_consume()
        raw, self._raw = self._raw, []
        return raw

    def read_counters(self) -> Dict[str, DevCounters]:
        """Cumulative kernel counters per device MAC."""
        out = {}
        for key, per_cpu in table_items(self._bpf[b"devices"]):
            out[mac_from_bytes(bytes(key.addr))] = sum_per_cpu(per_cpu)
        return out

    def losses(self) -> Dict[str, int]:
        table = self._bpf[b"dev_losses"]
        return {
            "ring_full": int(sum(table[ctypes.c_int(LOSS_RING)])),
            "devices_full": int(sum(table[ctypes.c_int(LOSS_DEVICES)])),
            "malformed": int(sum(table[ctypes.c_int(LOSS_MALFORMED)])),
        }
