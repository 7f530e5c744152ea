"""The unit's privileges, for a daemon started outside systemd (the kernel matrix's smoke run):
systemd/netwatchd.service's CapabilityBoundingSet=, LimitMEMLOCK= and NoNewPrivileges=, read from
the unit itself, applied with util-linux's prlimit and setpriv.

A service of uid 0 gets exactly its bounding set as permitted and effective capabilities on exec
(capabilities(7): root's file capabilities count as full, then the bounding set masks them), so
`setpriv --bounding-set -all,+bpf,...` in front of the daemon gives it what the unit gives it,
on any kernel -- the VMs of tests/kernels/vm.py included, where no systemd runs.

NETWATCHD_SMOKE_CAPS=bpf,perfmon,... replaces the unit's set, NETWATCHD_SMOKE_MEMLOCK=8M its
memlock limit, for a diagnosis by hand (which capability does a kernel want, and why?); the
matrix sets neither.
"""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "netwatchd.service"

# include/uapi/linux/capability.h, in number order (CAP_CHOWN = 0 ... CAP_CHECKPOINT_RESTORE = 40)
CAPABILITIES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
    "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
    "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
    "checkpoint_restore",
)


def service_settings(text: str) -> Dict[str, List[str]]:
    """[Service] key -> its values in order (a key may repeat)."""
    out: Dict[str, List[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def bounding_set(text: str) -> List[str]:
    """CapabilityBoundingSet= as systemd reads it: lines add up, an empty one resets; names
    lower-case without CAP_ (as setpriv takes them)."""
    caps: List[str] = []
    for value in service_settings(text).get("CapabilityBoundingSet", []):
        if not value:
            caps = []
            continue
        if value.startswith("~"):
            raise ValueError("CapabilityBoundingSet=~... (a deny list) is not what the unit says")
        caps += [c.lower().removeprefix("cap_") for c in value.split()]
    unknown = [c for c in caps if c not in CAPABILITIES]
    if unknown:
        raise ValueError(f"unknown capabilities in the unit: {unknown}")
    return sorted(set(caps), key=CAPABILITIES.index)


def capability_mask(caps: List[str]) -> int:
    return sum(1 << CAPABILITIES.index(c) for c in caps)


def wanted_caps(text: str) -> List[str]:
    forced = os.environ.get("NETWATCHD_SMOKE_CAPS")
    if forced is not None:
        return sorted({c.strip().lower().removeprefix("cap_") for c in forced.split(",") if c.strip()},
                      key=CAPABILITIES.index)
    return bounding_set(text)


def command_prefix(text: str) -> List[str]:
    """prlimit + setpriv in front of the daemon: the unit's memlock limit, capabilities and
    no_new_privs. Both exec the next program, so the daemon keeps the pid the harness started."""
    settings = service_settings(text)
    prefix: List[str] = []
    memlock = os.environ.get("NETWATCHD_SMOKE_MEMLOCK") or (settings.get("LimitMEMLOCK") or [""])[-1]
    if memlock and can_raise_limits():
        value = "unlimited" if memlock == "infinity" else memlock
        prefix += ["prlimit", f"--memlock={value}:{value}", "--"]
    caps = wanted_caps(text)
    prefix += ["setpriv", "--inh-caps=-all", "--ambient-caps=-all",
               "--bounding-set=" + ",".join(["-all"] + [f"+{c}" for c in caps])]
    if (settings.get("NoNewPrivileges") or ["no"])[-1] in ("yes", "true", "1", "on"):
        prefix.append("--no-new-privs")
    return prefix + ["--"]


def can_raise_limits() -> bool:
    """Whether this process may raise a hard limit (CAP_SYS_RESOURCE): a sandbox around the
    tests may have dropped it, and then the daemon runs with the limit the tests have (BPF
    memory is charged to memory cgroups, not to RLIMIT_MEMLOCK, from Linux 5.11 on)."""
    return bool(process_caps(os.getpid())["CapEff"] >> CAPABILITIES.index("sys_resource") & 1)


def memlock_limit() -> str:
    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    return "unlimited" if hard == resource.RLIM_INFINITY else f"{hard // 1024} KiB"


def process_caps(pid: int) -> Dict[str, int]:
    """CapEff, CapPrm, CapInh, CapBnd, CapAmb of a process, as masks."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Cap"):
                key, value = line.split(":", 1)
                out[key] = int(value.strip(), 16)
    return out


def names(mask: int) -> List[str]:
    return [c for i, c in enumerate(CAPABILITIES) if mask >> i & 1]


def memory_max_bytes(text: str) -> int:
    """MemoryMax= in bytes (0 when the unit sets none)."""
    value = (service_settings(text).get("MemoryMax") or [""])[-1]
    m = re.fullmatch(r"(\d+)([KMGT]?)", value)
    if not m:
        return 0
    return int(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " ")


# perf_event_open(2) of a tracepoint the way bcc attaches one (PERF_TYPE_TRACEPOINT, PERF_SAMPLE_RAW,
# pid -1, cpu 0): prints "ok" or the errno's name
PERF_OPEN = r"""
import ctypes, errno, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
attr = bytearray(112)
struct.pack_into("IIQQQQQI", attr, 0, 2, 112, int(open(sys.argv[1]).read()), 1, 1 << 10, 0, 0, 1)
fd = libc.syscall(298, (ctypes.c_char * 112).from_buffer(attr), -1, 0, -1, 8)
print("ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()])
"""


def tracepoint_open_with(caps: List[str], tracepoint: str = "syscalls/sys_exit_connect") -> str:
    """Whether a process with exactly `caps` may open a tracepoint's perf event: "ok" or an errno
    name (EACCES: Debian's kernels at perf_event_paranoid 3 want CAP_SYS_ADMIN for any perf event)."""
    tracefs = next(d for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing") if os.path.isdir(f"{d}/events"))
    bounding = ",".join(["-all"] + [f"+{c}" for c in caps])
    r = subprocess.run(["setpriv", "--inh-caps=-all", f"--bounding-set={bounding}", "--", sys.executable, "-I", "-c",
                        PERF_OPEN, f"{tracefs}/events/{tracepoint}/id"], capture_output=True, text=True, timeout=60)
    return r.stdout.strip() or r.stderr.strip()[-200:]


def perf_event_paranoid() -> int:
    with open("/proc/sys/kernel/perf_event_paranoid") as f:
        return int(f.read())
