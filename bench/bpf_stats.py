"""Per-program BPF run time, as the kernel keeps it when kernel.bpf_stats_enabled is on.

Programs are identified by id, and the ids by the process that holds them (its fds in
/proc/PID/fdinfo): other engineers may run programs with the same names at the same time.
Counters are read with `bpftool prog show --json` (from /proc/PID/fdinfo when bpftool is
missing); the benchmark only ever uses differences between two readings.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
BPF_ENABLE_STATS = 32  # enum bpf_cmd
BPF_STATS_RUN_TIME = 0

# enum bpf_attach_type -> the name of netwatchd's program attached there
CGROUP_ATTACH_NAMES = {3: "nw_sockops", 10: "nw_connect4", 11: "nw_connect6", 14: "nw_sendmsg4", 15: "nw_sendmsg6"}


@dataclass(frozen=True)
class Prog:
    id: int
    pid: int  # a process holding it
    fd: int


class StatsEnabled:
    """kernel.bpf_stats_enabled=1 while the benchmark runs, then its previous value again.

    Also holds a BPF_ENABLE_STATS fd: the kernel keeps stats on while it is open, so someone
    writing 0 to the sysctl in the middle of our run cannot switch them off under us."""

    def __init__(self) -> None:
        self.previous: Optional[str] = None
        self.fd = -1

    def __enter__(self) -> "StatsEnabled":
        with open(SYSCTL) as f:
            self.previous = f.read().strip()
        if self.previous != "1":
            _write_sysctl("1")
        if SYS_BPF is not None:
            attr = ctypes.create_string_buffer(8)  # union bpf_attr { struct { __u32 type; } enable_stats; }
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, attr, 4)
            self.fd = fd if fd >= 0 else -1
        return self

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.previous is not None and self.previous != "1":
            _write_sysctl(self.previous)
        self.previous = None


def _write_sysctl(value: str) -> None:
    with open(SYSCTL, "w") as f:
        f.write(value)


def _fdinfo(pid: int) -> Iterator[Tuple[int, Dict[str, str]]]:
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        if "prog_id:" not in text:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        yield int(fd), {k.strip(): v.strip() for k, v in fields.items()}


def netwatchd_programs(pid: int) -> Dict[str, Prog]:
    """The attached BPF programs held by process `pid`, by what they are attached to.

    Tracepoint programs are named by their tracepoint (asked of the kernel with
    BPF_TASK_FD_QUERY on the process's perf-event fds), cgroup programs by the attach type of
    the link that holds them (nw_connect4, ...). Programs loaded but not attached never run
    and are left out."""
    progs: Dict[int, int] = {}  # prog id -> fd
    attached: Dict[int, str] = {}  # prog id -> name
    for fd, info in _fdinfo(pid):
        prog_id = int(info["prog_id"])
        if info.get("link_type") == "raw_tracepoint":
            attached[prog_id] = info.get("tp_name", f"raw_tracepoint_{prog_id}")
        elif "link_id" in info:
            attach = int(info.get("attach_type", "-1").split()[0])  # tcx links add " (ingress)"
            attached[prog_id] = CGROUP_ATTACH_NAMES.get(attach, f"attach_type_{attach}")
        elif "prog_type" in info:
            progs[prog_id] = fd
    for fd in _perf_event_fds(pid):
        found = task_fd_query(pid, fd)
        if found:
            attached[found[0]] = found[1]
    named: Dict[str, Prog] = {}
    for prog_id, name in attached.items():
        if prog_id not in progs:
            continue
        if name in named and name.startswith("tcp_receive_reset"):
            name += "#2"  # connect.bpf.c's second RST mark program
        if name in named:
            raise RuntimeError(f"process {pid} holds two programs on {name}: {named[name].id}, {prog_id}")
        named[name] = Prog(prog_id, pid, progs[prog_id])
    return named


@dataclass(frozen=True)
class TcxLink:
    prog: Prog
    ifindex: int
    attach_type: int  # 46 TCX_INGRESS, 47 TCX_EGRESS
    link_id: int


def tcx_links(pid: int) -> List[TcxLink]:
    """The TCX links process `pid` holds: which of its programs is attached where. A link goes
    when its fd is closed, so this is also what that process has attached right now."""
    progs: Dict[int, int] = {}  # prog id -> fd of the program
    found = []
    for fd, info in _fdinfo(pid):
        if info.get("link_type") == "tcx":
            found.append((int(info["prog_id"]), int(info.get("ifindex", 0)),
                          int(info["attach_type"].split()[0]), int(info["link_id"])))
        elif "prog_type" in info:
            progs[int(info["prog_id"])] = fd
    return [TcxLink(Prog(prog_id, pid, progs.get(prog_id, -1)), ifindex, attach, link_id)
            for prog_id, ifindex, attach, link_id in found]


BPF_PROG_QUERY = 16


class _ProgQuery(ctypes.Structure):  # union bpf_attr, the BPF_PROG_QUERY member
    _fields_ = [("target_ifindex", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32), ("prog_ids", ctypes.c_uint64),
                ("count", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("prog_attach_flags", ctypes.c_uint64),
                ("link_ids", ctypes.c_uint64), ("link_attach_flags", ctypes.c_uint64), ("revision", ctypes.c_uint64)]


def tcx_chain(ifindex: int, attach_type: int, max_progs: int = 64) -> List[int]:
    """Program ids attached to an interface's TCX hook, in the order they run."""
    if SYS_BPF is None:
        raise RuntimeError("BPF_PROG_QUERY: unknown syscall number on this architecture")
    ids = (ctypes.c_uint32 * max_progs)()
    attr = _ProgQuery(target_ifindex=ifindex, attach_type=attach_type, prog_ids=ctypes.addressof(ids),
                      count=max_progs)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_BPF, BPF_PROG_QUERY, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_QUERY ifindex {ifindex} attach type {attach_type}: {os.strerror(err)}")
    return list(ids[: attr.count])


def _perf_event_fds(pid: int) -> Iterator[int]:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "perf_event" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                yield int(fd)
        except OSError:
            continue


class _TaskFdQuery(ctypes.Structure):  # union bpf_attr, the BPF_TASK_FD_QUERY member
    _fields_ = [("pid", ctypes.c_uint32), ("fd", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("buf_len", ctypes.c_uint32), ("buf", ctypes.c_uint64), ("prog_id", ctypes.c_uint32),
                ("fd_type", ctypes.c_uint32), ("probe_offset", ctypes.c_uint64), ("probe_addr", ctypes.c_uint64)]


BPF_TASK_FD_QUERY = 20
BPF_FD_TYPE_TRACEPOINT = 1
BPF_FD_TYPE_RAW_TRACEPOINT = 0


def task_fd_query(pid: int, fd: int) -> Optional[Tuple[int, str]]:
    """(prog id, tracepoint name) of a perf-event fd of another process, or None."""
    if SYS_BPF is None:
        return None
    buf = ctypes.create_string_buffer(256)
    attr = _TaskFdQuery(pid=pid, fd=fd, buf_len=len(buf), buf=ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_BPF, BPF_TASK_FD_QUERY, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        return None
    if attr.fd_type not in (BPF_FD_TYPE_TRACEPOINT, BPF_FD_TYPE_RAW_TRACEPOINT):
        return None
    return attr.prog_id, buf.value.decode()


def prog_of_fd(pid: int, fd: int) -> Prog:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("prog_id:"):
                return Prog(int(line.split(":")[1]), pid, fd)
    raise RuntimeError(f"fd {fd} of process {pid} is not a BPF program")


def read_counters(progs: Iterable[Prog]) -> Dict[int, Tuple[int, int]]:
    """prog id -> (run_time_ns, run_cnt), all read at (nearly) one moment."""
    progs = list(progs)
    bpftool = shutil.which("bpftool")
    if bpftool:
        out = subprocess.run([bpftool, "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
        by_id = {p["id"]: p for p in json.loads(out)}
        result = {}
        for prog in progs:
            p = by_id.get(prog.id)
            if p is None:
                raise RuntimeError(f"BPF program {prog.id} (held by pid {prog.pid}) is gone")
            result[prog.id] = (int(p.get("run_time_ns", 0)), int(p.get("run_cnt", 0)))
        return result
    result = {}
    for prog in progs:
        info = dict(_fdinfo_one(prog.pid, prog.fd))
        result[prog.id] = (int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0)))
    return result


def _fdinfo_one(pid: int, fd: int) -> Iterator[Tuple[str, str]]:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            k, _, v = line.partition(":")
            yield k.strip(), v.strip()


def per_run(before: Dict[int, Tuple[int, int]], after: Dict[int, Tuple[int, int]], prog: Prog) -> Dict:
    """Average ns per run of one program between two readings (None if it never ran)."""
    ns = after[prog.id][0] - before[prog.id][0]
    runs = after[prog.id][1] - before[prog.id][1]
    return {"id": prog.id, "runs": runs, "run_time_ns": ns, "ns_per_run": ns / runs if runs else None}
