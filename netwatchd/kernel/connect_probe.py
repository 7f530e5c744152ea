"""The connect-path BPF programs, loaded and read through bcc (which only netwatchd.kernel imports).

Thin on purpose: compile bpf/connect.bpf.c with settings as -D flags, attach, and hand raw
counters and raw records to the engine. Nothing here interprets them beyond the ctypes layout.
"""
from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Dict, List, Set, Tuple

from netwatchd.config import ConnectionsConfig
from netwatchd.connects.history import CounterKeyT, Counts
from netwatchd.connects.records import EVENT_DTYPE, ConnectLosses, PendingHandshake, RecordBatch, decode_comm
from netwatchd.kernel import features
from netwatchd.kernel import headers as kernel_env
from netwatchd.kernel import links as bpf_links
from netwatchd.kernel.bpf_util import (QUIET_KERNEL_HEADER_WARNINGS, ProbeError, RingReader, bpf_source_dir,
                                       return_freed_heap, ring_pages, table_items)
from netwatchd.kernel.mapped_ring import MappedRing

log = logging.getLogger(__name__)

PENDING_SLOTS = 4096  # in-flight connect()s tracked by thread id; a power of two
# (command, destination, bucket) cells of the latency histograms; beyond, latencies are
# counted in losses (LatencySamplesLost) and the histograms stop growing.
MAX_LATENCY_KEYS = 16384


def ended_entries(cpus: int) -> int:
    """Size of the `ended` LRU, where each handshake's end waits for its connect() to return
    (microseconds, usually). An LRU map hands each CPU a local batch of free entries, and evicts
    early once the batches add up to the map: 256 a CPU keeps that far from a few live ends."""
    return max(4096, 256 * cpus)


# Flows remembered while the ring is full, to tell a flow's first record from its repeats.
FLOWS_SEEN = 16384


def reserve_ring_kib(ring_kib: int) -> int:
    """The reserve ring for new flows' first records while the main ring is full: a quarter."""
    return max(64, ring_kib // 4)


def long_ring_kib(ring_kib: int) -> int:
    """Unix sockets' and early failures' longer records: rare, a sixteenth."""
    return max(16, ring_kib // 16)


CGROUP_ROOT_INO = 1  # cgroup2's root directory; in a container the mount's root is a subtree


def cgroup_subtree(cgroup_dir: str) -> bool:
    """True when the cgroup2 mount seen here is not the machine's root (a container's cgroup
    namespace): the tracepoints must then keep to it (NW_CGROUP_SCOPE)."""
    return os.stat(cgroup_dir).st_ino != CGROUP_ROOT_INO


def cflags_for(cfg: ConnectionsConfig, bpf_dir: Path, kernel: features.KernelFeatures = None,
               scoped: bool = False) -> List[str]:
    kernel = kernel or features.current()
    return [
        f"-I{bpf_dir}",
        f"-DNW_MAX_PROCS={cfg.max_processes}",
        f"-DNW_PENDING_SLOTS={PENDING_SLOTS}",
        f"-DNW_MAX_HANDSHAKES={cfg.max_handshakes}",
        f"-DNW_ENDED_ENTRIES={ended_entries(os.cpu_count() or 1)}",
        f"-DNW_MAX_LATENCY_KEYS={MAX_LATENCY_KEYS}",
        f"-DNW_SK_ERR_OFFSET={kernel.sk_err_offset}",
        f"-DNW_SK_STATE_OFFSET={kernel.sk_state_offset}",
        f"-DNW_RING_PAGES={ring_pages(cfg.ring_buffer_kib)}",
        f"-DNW_RESERVE_RING_PAGES={ring_pages(reserve_ring_kib(cfg.ring_buffer_kib))}",
        f"-DNW_LONG_RING_PAGES={ring_pages(long_ring_kib(cfg.ring_buffer_kib))}",
        f"-DNW_FLOWS_SEEN={FLOWS_SEEN}",
        f"-DNW_RECORD_EVENTS={1 if cfg.record_events else 0}",
        f"-DNW_SOCKADDR_AT_ENTER={0 if kernel.task_pt_regs else 1}",
        f"-DNW_SOCKOPS_CURRENT_TASK={1 if kernel.sockops_current_task else 0}",
        f"-DNW_CGROUP_SCOPE={1 if scoped else 0}",
    ] + QUIET_KERNEL_HEADER_WARNINGS


class ConnectProbe:
    def __init__(self, cfg: ConnectionsConfig):
        self.cfg = cfg
        self._bpf = None
        self._cgroup_fd = -1
        self._links: Dict[str, int] = {}
        self._reset_mark_fd = -1  # the RST mark's second program (_attach_second_reset_mark)
        self._rings: List[MappedRing] = []
        self._long: RingReader | None = None
        self._drain_gen = 0
        self._malformed = 0  # the rings' malformed records handed over so far

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        kernel_env.ensure_tracefs()
        kernel_env.kernel_headers()
        from bcc import BPF  # imported late: bcc fixes the tracefs path when imported

        bpf_dir = bpf_source_dir()
        cgroup = kernel_env.cgroup2_root()
        scoped = cgroup_subtree(cgroup)
        try:
            # TRACEPOINT_PROBE programs attach while the module loads.
            self._bpf = BPF(src_file=str(bpf_dir / "connect.bpf.c").encode(),
                            cflags=cflags_for(self.cfg, bpf_dir, scoped=scoped))
        except Exception as e:  # bcc raises bare Exception on compile/load errors
            raise ProbeError(f"cannot load {bpf_dir / 'connect.bpf.c'}: {e}") from None
        self._cgroup_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        if scoped:
            self._bpf[b"scope_cgroup"][0] = self._cgroup_fd
            log.info("cgroup %s is a container's: counting the connects of its processes only", cgroup)
        # the RST mark's second program: marks what the first, interrupted, is skipped for
        self._attach_second_reset_mark()
        # the connect hooks note each TCP connect's socket; sock_ops ends its handshake
        self._attach_cgroup("nw_connect4", bpf_links.CGROUP_INET4_CONNECT)
        self._attach_cgroup("nw_connect6", bpf_links.CGROUP_INET6_CONNECT)
        self._attach_cgroup("nw_sockops", bpf_links.CGROUP_SOCK_OPS)
        self.set_udp_sends(self.cfg.trace_udp_sends)
        for name in (b"events", b"events_reserve"):
            table = self._bpf[name]
            self._rings.append(MappedRing(table.map_fd, table.max_entries, EVENT_DTYPE))
        self._long = RingReader(self._bpf, b"events_long")
        return_freed_heap()
        log.info("connect probe attached: %s (cgroup %s)", ", ".join(self.attached_programs()), cgroup)

    def stop(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings = []
        for name in list(self._links):
            self._detach(name)
        if self._reset_mark_fd >= 0:
            os.close(self._reset_mark_fd)
            self._reset_mark_fd = -1
        if self._cgroup_fd >= 0:
            os.close(self._cgroup_fd)
            self._cgroup_fd = -1
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def set_udp_sends(self, enabled: bool) -> None:
        """Attach or detach the unconnected-UDP-send hooks; used at start and on reload."""
        hooks = (("nw_sendmsg4", bpf_links.CGROUP_UDP4_SENDMSG), ("nw_sendmsg6", bpf_links.CGROUP_UDP6_SENDMSG))
        for name, attach_type in hooks:
            if enabled and name not in self._links:
                self._attach_cgroup(name, attach_type)
            elif not enabled and name in self._links:
                self._detach(name)

    def attached_programs(self) -> List[str]:
        # tcp_receive_reset holds two programs (connect.bpf.c's RST marks): one attachment point
        tracepoints = ["sys_exit_connect", "tcp_receive_reset"] if self._bpf is not None else []
        if self._bpf is not None and self.cfg.record_events and not features.current().task_pt_regs:
            tracepoints.append("sys_enter_connect")  # the sockaddr fallback of kernels < 5.15
        return tracepoints + sorted(self._links)

    def program_fds(self) -> Dict[str, int]:
        """Loaded program name -> fd, for their run-time statistics (/proc/self/fdinfo)."""
        if self._bpf is None:
            return {}
        fds = {}
        for name, fn in self._bpf.funcs.items():
            name = name.decode() if isinstance(name, bytes) else name
            fds[name.replace("tracepoint__syscalls__", "")
                .replace("raw_tracepoint__", "")] = fn.fd
        return fds

    def _attach_second_reset_mark(self) -> None:
        """bcc holds one program per raw tracepoint (by name), so the second is attached through
        libbcc itself; its fd is kept with the links, closed at stop."""
        from bcc import BPF
        from bcc.libbcc import lib

        fn = self._bpf.load_func(b"nw_reset_mark_second", BPF.RAW_TRACEPOINT)
        fd = lib.bpf_attach_raw_tracepoint(fn.fd, b"tcp_receive_reset")
        if fd < 0:
            raise ProbeError("cannot attach a second program to the tcp_receive_reset raw tracepoint")
        self._reset_mark_fd = fd

    def _attach_cgroup(self, name: str, attach_type: int) -> None:
        from bcc import BPF

        if attach_type == bpf_links.CGROUP_SOCK_OPS:
            fn = self._bpf.load_func(name.encode(), BPF.SOCK_OPS)
        else:
            fn = self._bpf.load_func(name.encode(), BPF.CGROUP_SOCK_ADDR, attach_type=attach_type)
        try:
            self._links[name] = bpf_links.link(fn.fd, self._cgroup_fd, attach_type, name)
        except bpf_links.LinkError as e:
            raise ProbeError(str(e)) from None

    def _detach(self, name: str) -> None:
        os.close(self._links.pop(name))

    # -- reading ---------------------------------------------------------------------------
    def drain(self) -> RecordBatch:
        """The records the kernel has committed since the last call (no wakeups involved): the
        main and reserve rings as arrays, the long records as bytes. Then a new drain generation:
        while the ring is full, each flow gets one record through the reserve per generation."""
        batch = RecordBatch(self._rings[0].take(), self._rings[1].take(), self._long.drain())
        malformed = sum(ring.malformed for ring in self._rings)
        batch.malformed, self._malformed = malformed - self._malformed, malformed
        self._drain_gen = (self._drain_gen + 1) & 0xFFFFFFFF
        self._bpf[b"drain_gen"][ctypes.c_int(0)] = ctypes.c_uint32(self._drain_gen)
        return batch

    def read_counters(self) -> Dict[CounterKeyT, Tuple[str, Counts]]:
        """Every process's cumulative counters: {(pid, generation): (command, counts)}.

        Live entries are read before retired ones: an entry retired in between then shows up
        in both with the same value, and the larger (equal) one is kept — never the sum.
        """
        out: Dict[CounterKeyT, Tuple[str, Counts]] = {}
        for tgid, entry in table_items(self._bpf[b"proc_counts"]):
            out[(int(getattr(tgid, "value", tgid)), entry.gen)] = (decode_comm(entry.comm), _counts(entry))
        for key, entry in table_items(self._bpf[b"retired_counts"]):
            k = (key.tgid, key.gen)
            counts = _counts(entry)
            if k in out:
                counts = Counts(*(max(a, b) for a, b in zip(out[k][1], counts)))
            out[k] = (decode_comm(entry.comm), counts)
        return out

    def delete_processes(self, pids: Set[int]) -> None:
        """Free the counters of processes that are gone (after their last read)."""
        live = self._bpf[b"proc_counts"]
        for pid in pids:
            try:
                del live[live.Key(pid)]
            except KeyError:
                pass
        retired = self._bpf[b"retired_counts"]
        for key in [k for k in retired.keys() if k.tgid in pids]:
            try:
                del retired[key]
            except KeyError:
                pass

    def losses(self) -> ConnectLosses:
        table = self._bpf[b"losses"]
        return ConnectLosses(*(int(sum(table[ctypes.c_int(i)])) for i in range(len(ConnectLosses._fields))))

    def pending_handshakes(self) -> List[PendingHandshake]:
        """Handshakes still pending after their connect() returned (the kernel's `handshakes`)."""
        return [PendingHandshake(int(getattr(sk, "value", sk)), h.tgid, h.gen, decode_comm(h.comm), h.syn_ns)
                for sk, h in table_items(self._bpf[b"handshakes"])]

    def abandon_handshake(self, sk: int) -> bool:
        """Stop following a handshake; True if it was still followed (its end was not counted)."""
        table = self._bpf[b"handshakes"]
        try:
            del table[table.Key(sk)]
        except KeyError:
            return False
        return True

    def latency_cells(self) -> Dict[Tuple[str, int, bytes, int], Dict[int, Tuple[int, int]]]:
        """{(command, family, address, port): {slot: (handshakes, sum of their us)}}."""
        out: Dict[Tuple[str, int, bytes, int], Dict[int, Tuple[int, int]]] = {}
        for key, per_cpu in table_items(self._bpf[b"latency"]):
            where = (decode_comm(key.comm), key.family, bytes(key.addr), key.port)
            out.setdefault(where, {})[key.slot] = (sum(int(c.count) for c in per_cpu),
                                                    sum(int(c.sum_usec) for c in per_cpu))
        return out


def _counts(entry) -> Counts:
    c = entry.counts
    return Counts(c.succeeded, c.refused, c.timed_out, c.other_failed, c.unknown, c.udp_sends)
