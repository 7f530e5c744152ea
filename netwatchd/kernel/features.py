"""What the running kernel can do, probed once at start so every program takes a path the
kernel accepts instead of failing to load.

Probes ask the kernel itself (libbpf's helper probe loads a two-instruction program; TCX is
looked up in the kernel's BTF, else /proc/kallsyms), never the version number: distributions backport features.
Each capability with a fallback is chosen here; what a kernel really cannot give is listed in
`degraded` with its reason, which the daemon logs once and shows in status.
"""
from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

from netwatchd.kernel import btf

log = logging.getLogger(__name__)

BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_SOCK_OPS = 13
BPF_FUNC_GET_CURRENT_PID_TGID = 14
BPF_MAP_TYPE_RINGBUF = 27
BPF_FUNC_GET_CURRENT_TASK_BTF = 158  # Linux 5.11
BPF_FUNC_TASK_PT_REGS = 175  # Linux 5.15
TCX_TYPE = "tcx_link"  # struct tcx_link, include/net/tcx.h, Linux 6.6
TCX_SYMBOL = "tcx_link_attach"  # kernel/bpf/tcx.c, Linux 6.6 (kernels without BTF)


@dataclass(frozen=True)
class KernelFeatures:
    release: str
    # bpf_get_current_task_btf + bpf_task_pt_regs: sys_exit_connect reads the caller's sockaddr
    # from the saved syscall registers. Without them a sys_enter_connect tracepoint notes the
    # address argument instead (one more program run per connect()).
    task_pt_regs: bool
    # TCX links for the TC classifier; without them a clsact qdisc + direct-action filters.
    tcx: bool
    ringbuf: bool
    # bpf_get_current_pid_tgid in sock_ops programs: a handshake that ends inside the connect()
    # that began it (a loopback one, or an answer the caller's own context handled) is handed to
    # that connect() in its thread's slot. Without it, through the `ended` map (a map update and
    # delete more per connect).
    sockops_current_task: bool = True
    # Byte offset of sk_err in struct sock, from the running kernel's BTF (-1 without BTF): how
    # a handshake that failed after connect() returned is told apart (refused, timed out, other).
    sk_err_offset: int = -1
    # Byte offset of skc_state in struct sock_common (18 on every kernel so far; BTF's when known):
    # a handshake that ended on another CPU just before connect() returned is seen in its state.
    sk_state_offset: int = 18
    degraded: List[str] = field(default_factory=list)

    def notes(self) -> List[str]:
        """One line per fallback or missing capability, for the log and `netwatchctl status`."""
        out = []
        if not self.task_pt_regs:
            out.append("connect sockaddr read at sys_enter_connect (no bpf_task_pt_regs before Linux 5.15)")
        if not self.tcx:
            out.append("TC classifier on clsact filters (no TCX links before Linux 6.6)")
        if not self.sockops_current_task:
            out.append("TCP handshake ends handed to connect() through a map (no bpf_get_current_pid_tgid "
                       "in sock_ops programs)")
        if self.sk_err_offset < 0:
            out.append("no kernel BTF: a non-blocking connect that fails after returning is counted as "
                       "other_failed (refused and timed out are not told apart)")
        return out + list(self.degraded)


def _libbpf() -> Optional[ctypes.CDLL]:
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        lib.libbpf_probe_bpf_helper.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        lib.libbpf_probe_bpf_map_type.argtypes = [ctypes.c_int, ctypes.c_void_p]
    except (OSError, AttributeError):  # no libbpf >= 0.7: every choice falls back to the safe side
        return None
    return lib


def helper_available(lib, prog_type: int, helper: int) -> bool:
    return lib is not None and lib.libbpf_probe_bpf_helper(prog_type, helper, None) == 1


def map_type_available(lib, map_type: int) -> bool:
    """Unknown (no probe in this libbpf) counts as available: loading will say if it is not."""
    return lib is None or lib.libbpf_probe_bpf_map_type(map_type, None) == 1


def kernel_has_type(name: str, btf: str = "/sys/kernel/btf/vmlinux") -> Optional[bool]:
    """Whether the kernel's BTF names a type `name` (None without BTF). One read of a few MB and
    a byte search: far cheaper than walking /proc/kallsyms, which matters under emulation."""
    try:
        with open(btf, "rb") as f:
            return b"\0" + name.encode() + b"\0" in f.read()
    except OSError:
        return None


def kernel_has_symbol(name: str, kallsyms: str = "/proc/kallsyms") -> bool:
    suffix = " " + name
    try:
        with open(kallsyms, encoding="ascii", errors="replace") as f:
            return any(line.rstrip("\n").endswith(suffix) for line in f)
    except OSError:
        return False


def probe() -> KernelFeatures:
    lib = _libbpf()
    task_pt_regs = (helper_available(lib, BPF_PROG_TYPE_TRACEPOINT, BPF_FUNC_GET_CURRENT_TASK_BTF)
                    and helper_available(lib, BPF_PROG_TYPE_TRACEPOINT, BPF_FUNC_TASK_PT_REGS))
    ringbuf = map_type_available(lib, BPF_MAP_TYPE_RINGBUF)
    sockops_current_task = helper_available(lib, BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_GET_CURRENT_PID_TGID)
    degraded = []
    if not ringbuf:
        degraded.append("no BPF ring buffer (Linux 5.8): netwatchd needs it and cannot start")
    return KernelFeatures(release=os.uname().release, task_pt_regs=task_pt_regs,
                          tcx=has_tcx(), ringbuf=ringbuf, sockops_current_task=sockops_current_task,
                          degraded=degraded, **sock_offsets())


def sock_offsets() -> dict:
    wanted = [("sock", "sk_err"), ("sock_common", "skc_state")]
    try:
        found = btf.member_offsets(wanted)
    except btf.BtfError as e:
        log.debug("struct sock offsets: %s", e)
        return {}
    return {"sk_err_offset": found[wanted[0]], "sk_state_offset": found[wanted[1]]}


def has_tcx() -> bool:
    in_btf = kernel_has_type(TCX_TYPE)
    return in_btf if in_btf is not None else kernel_has_symbol(TCX_SYMBOL)


_probed: Optional[KernelFeatures] = None


def current() -> KernelFeatures:
    """The running kernel's features, probed on first use and logged once."""
    global _probed
    if _probed is None:
        _probed = probe()
        notes = _probed.notes()
        log.info("kernel %s: %s", _probed.release, "; ".join(notes) if notes else "every capability available")
    return _probed
