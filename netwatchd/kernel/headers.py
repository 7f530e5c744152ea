"""What bcc needs from the running system, checked before bcc is imported.

bcc compiles against kernel headers at /lib/modules/$(uname -r)/build and finds tracepoints
through tracefs, whose path it fixes when it is imported. Both are checked here so a missing
piece is one clear error, not a compiler backtrace.
"""
from __future__ import annotations

import logging
import os
import subprocess

log = logging.getLogger(__name__)

TRACEFS_DIRS = ("/sys/kernel/debug/tracing", "/sys/kernel/tracing")


class KernelEnvError(RuntimeError):
    """The kernel side cannot be prepared (no headers, no tracefs, no cgroup v2)."""


def ensure_tracefs() -> str:
    for d in TRACEFS_DIRS:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    # systemd mounts it on boot (sys-kernel-tracing.mount); a bare container may not.
    target = TRACEFS_DIRS[1]
    r = subprocess.run(["mount", "-t", "tracefs", "tracefs", target], capture_output=True, text=True)
    if r.returncode != 0:
        raise KernelEnvError(f"tracefs is not mounted and mounting it on {target} failed: {r.stderr.strip()}")
    log.info("mounted tracefs on %s (it was not mounted)", target)
    return target


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
