"""What bcc needs from the running system, checked before bcc is imported.

bcc compiles against kernel headers at /lib/modules/$(uname -r)/build and finds tracepoints
through tracefs, whose path it fixes when it is imported. Both are checked here so a missing
piece is one clear error, not a compiler backtrace.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import struct
from typing import Callable, Optional

log = logging.getLogger(__name__)

TRACEFS_DIRS = ("/sys/kernel/debug/tracing", "/sys/kernel/tracing")


class KernelEnvError(RuntimeError):
    """The kernel side cannot be prepared (no headers, no tracefs, no cgroup v2)."""


def ensure_tracefs(dirs=TRACEFS_DIRS) -> str:
    """Where tracefs is (bcc finds tracepoints there), once tracepoints can be opened there. The
    daemon never mounts it: it runs without mount(2). systemd mounts it at boot
    (sys-kernel-tracing.mount); where it does not (a container), netwatchd-kernel-headers.service
    does before every start, as `make run` and `make test` do."""
    for d in dirs:
        if os.path.isdir(os.path.join(d, "events")):
            check_tracepoint_access(d)
            return d
    raise KernelEnvError(
        f"tracefs is not mounted (no events/ in {' or '.join(dirs)}): bcc attaches the connect "
        f"tracepoints through it. netwatchd-kernel-headers mounts it (the unit runs it before "
        f"start), or: mount -t tracefs tracefs {dirs[-1]}"
    )


TRACEPOINT = "syscalls/sys_exit_connect"  # the one the connect path cannot do without
SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}


def _perf_event_open(id_path: str) -> int:
    """0, or the errno of perf_event_open(2) on a tracepoint the way bcc attaches one
    (PERF_TYPE_TRACEPOINT, PERF_SAMPLE_RAW, every process, CPU 0); 0 too where this
    architecture's syscall number is not known here (bcc will say what fails)."""
    number = SYS_PERF_EVENT_OPEN.get(platform.machine())
    if number is None:
        return 0
    with open(id_path) as f:
        tracepoint_id = int(f.read())
    attr = bytearray(112)  # struct perf_event_attr, PERF_ATTR_SIZE_VER7
    struct.pack_into("IIQQQQQI", attr, 0, 2, len(attr), tracepoint_id, 1, 1 << 10, 0, 0, 1)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(number, (ctypes.c_char * len(attr)).from_buffer(attr), -1, 0, -1, 8)  # FD_CLOEXEC
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0


def _perf_event_paranoid() -> Optional[int]:
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def check_tracepoint_access(tracefs: str, open_event: Callable[[str], int] = _perf_event_open,
                            paranoid: Callable[[], Optional[int]] = _perf_event_paranoid) -> None:
    """bcc attaches each tracepoint through a perf event. Debian's kernels, at their default
    kernel.perf_event_paranoid of 3, open one only for CAP_SYS_ADMIN (CAP_PERFMON is not enough):
    a unit that drops CAP_SYS_ADMIN there gets EACCES, named here rather than as a failed attach."""
    id_path = os.path.join(tracefs, "events", TRACEPOINT, "id")
    if not os.path.exists(id_path):
        raise KernelEnvError(f"tracefs at {tracefs} has no tracepoint {TRACEPOINT.replace('/', ':')} (a kernel "
                             f"built without CONFIG_FTRACE_SYSCALLS): the connect path needs it")
    err = open_event(id_path)
    if err not in (errno.EACCES, errno.EPERM):
        return
    level = paranoid()
    why = (f"kernel.perf_event_paranoid is {level}: Debian's kernels then open perf events only for "
           f"CAP_SYS_ADMIN. Keep CAP_SYS_ADMIN in netwatchd.service's CapabilityBoundingSet= "
           f"(README, \"Kernels\")" if level is not None and level > 2 else
           "netwatchd needs CAP_PERFMON and CAP_BPF (and CAP_SYS_ADMIN where kernel.perf_event_paranoid > 2)")
    raise KernelEnvError(f"cannot open a perf event for tracepoint {TRACEPOINT.replace('/', ':')}: "
                         f"{errno.errorcode[err]}; {why}")


def kernel_headers() -> str:
    """The header directory bcc will use; says when they are the distro's generic ones."""
    release = os.uname().release
    build = f"/lib/modules/{release}/build"
    if not os.path.exists(build):
        raise KernelEnvError(
            f"no kernel headers at {build}: run netwatchd-kernel-headers (installs "
            f"linux-headers-{release}, or links the distro's generic headers when there is none)"
        )
    real = os.path.realpath(build)
    if real not in _logged:  # both probes ask; say it once
        _logged.add(real)
        if release not in os.path.basename(real):
            log.info(
                "using generic kernel headers %s for kernel %s: safe, our BPF code uses only "
                "tracepoints, hooks and uapi types", real, release,
            )
        else:
            log.info("using the running kernel's own headers %s", real)
    return real


_logged: set = set()


def cgroup2_root() -> str:
    """Mount point of the cgroup v2 hierarchy (unified or hybrid layout)."""
    with open("/proc/self/mounts", encoding="utf-8") as f:
        mounts = [line.split() for line in f]
    candidates = [m[1] for m in mounts if len(m) > 2 and m[2] == "cgroup2"]
    if not candidates:
        raise KernelEnvError("no cgroup v2 hierarchy is mounted: the connect hooks need one")
    return min(candidates, key=len)
