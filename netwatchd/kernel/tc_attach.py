"""Attaching the TC classifier to an interface: TCX links where the kernel has them (6.6+), else
a clsact qdisc with direct-action cls_bpf filters (every kernel we support). libbpf via ctypes.

TCX links are owned by their fd: the kernel detaches them when the daemon exits, however it
exits. A clsact filter is not owned by anything and outlives the daemon, SIGKILL included, so
the clsact path follows rules that keep everyone else's traffic control intact:
  - the clsact qdisc is created only when the interface has none; a qdisc that was there is
    used, never replaced;
  - our filters take our own handle and priority (FILTER_HANDLE, FILTER_PRIORITY) and a
    filter already there is never replaced;
  - stop removes exactly our filters -- those at our handle/priority still running our program
    id -- and the qdisc only when we created it and nobody else's filter is on it;
  - after a SIGKILL, the next attach finds our leftovers by the program's name (not by
    position: a filter of someone else at any handle/priority is left alone) and removes them.
    Whether we had created that qdisc is remembered in a small file in the state directory.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from netwatchd.atomic_files import write_atomically
from netwatchd.kernel import links as bpf_links

log = logging.getLogger(__name__)

SETTINGS = ("auto", "tcx", "tc")
PATH_TCX = "tcx"
PATH_CLSACT = "clsact"

# Ours, and unusual: "NW". Lower priorities run first; explicit ones are usually small numbers,
# the kernel's own default is 49152, so ours sits between (our program never drops a packet:
# TC_ACT_UNSPEC hands it on to the next filter).
FILTER_HANDLE = 0x4E57
FILTER_PRIORITY = 0x4E57

BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
DIRECTIONS = (("ingress", BPF_TC_INGRESS, bpf_links.TCX_INGRESS), ("egress", BPF_TC_EGRESS, bpf_links.TCX_EGRESS))
OUR_PROGRAMS = ("nw_tc_ingress", "nw_tc_egress")
CREATED_FILE = "tc-clsact-created.json"


class TcAttachError(OSError):
    """An interface could not get our classifier; names the interface and the path tried."""


class _Hook(ctypes.Structure):  # struct bpf_tc_hook (libbpf.h)
    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", ctypes.c_uint32)]


class _Opts(ctypes.Structure):  # struct bpf_tc_opts (libbpf.h)
    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32)]


_lib = None


def _libbpf() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        _lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        for name in ("bpf_tc_hook_create", "bpf_tc_hook_destroy"):
            getattr(_lib, name).argtypes = [ctypes.POINTER(_Hook)]
        for name in ("bpf_tc_attach", "bpf_tc_detach", "bpf_tc_query"):
            getattr(_lib, name).argtypes = [ctypes.POINTER(_Hook), ctypes.POINTER(_Opts)]
    return _lib


def _hook(ifindex: int, point: int) -> _Hook:
    return _Hook(ctypes.sizeof(_Hook), ifindex, point, 0)


def _opts(handle: int, priority: int, prog_fd: int = 0) -> _Opts:
    return _Opts(ctypes.sizeof(_Opts), prog_fd, 0, 0, handle, priority)


def choose_path(setting: str, kernel_has_tcx: bool) -> str:
    if setting == "tcx":
        return PATH_TCX
    if setting == "tc":
        return PATH_CLSACT
    return PATH_TCX if kernel_has_tcx else PATH_CLSACT


@dataclass
class Attachment:
    """Our classifier on one interface, by one path."""

    ifname: str
    ifindex: int
    path: str
    link_fds: List[int] = field(default_factory=list)  # TCX
    filters: Dict[int, int] = field(default_factory=dict)  # clsact: attach point -> our prog id
    created_qdisc: bool = False


def _tc(*args: str) -> subprocess.CompletedProcess:
    """iproute2's tc (a run-time dependency); its absence reads as "nothing there"."""
    try:
        return subprocess.run(["tc", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("cannot run tc %s: %s", " ".join(args), e)
        return subprocess.CompletedProcess(["tc", *args], 1, "", str(e))


def filters_on(ifname: str, direction: str) -> List[dict]:
    """Every filter on the interface's clsact hook, as `tc -j filter show` reports it."""
    r = _tc("-j", "filter", "show", "dev", ifname, direction)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    try:
        return [f for f in json.loads(r.stdout) if "options" in f]
    except ValueError:
        return []


def program_name(f: dict) -> str:
    opts = f.get("options", {})
    prog = opts.get("prog", {})
    return prog.get("name", "") or opts.get("bpf_name", "").split(":")[0]


def has_clsact(ifname: str) -> bool:
    r = _tc("-j", "qdisc", "show", "dev", ifname)
    try:
        return any(q.get("kind") == "clsact" for q in json.loads(r.stdout or "[]"))
    except ValueError:
        return False


class TcAttacher:
    """Attaches nw_tc_ingress / nw_tc_egress to interfaces by the path the setting chooses."""

    def __init__(self, setting: str, kernel_has_tcx: bool, state_dir: Optional[str] = None):
        self.setting = setting
        self.path = choose_path(setting, kernel_has_tcx)
        self._state_file = os.path.join(state_dir, CREATED_FILE) if state_dir else None
        self._logged = False

    def attach(self, ifname: str, ifindex: int, prog_fds: Dict[str, int]) -> Attachment:
        # whatever the path now: a run on clsact that was killed may have left filters there
        self.remove_leftovers(ifname, ifindex)
        if self.path == PATH_TCX:
            try:
                att = self._attach_tcx(ifname, ifindex, prog_fds)
            except bpf_links.LinkError as e:
                # auto: a kernel without TCX (a backport gone missing, a probe that lied) still
                # gets the classifier, on clsact
                if self.setting != "auto" or e.errno != 22:
                    raise
                log.warning("TCX refused on %s (%s): using clsact filters from now on", ifname, e.strerror)
                self.path = PATH_CLSACT
                att = self._attach_clsact(ifname, ifindex, prog_fds)
        else:
            att = self._attach_clsact(ifname, ifindex, prog_fds)
        if not self._logged:
            self._logged = True
            log.info("TC classifier attached by %s (devices.tc_attach: %s)",
                     "TCX links" if self.path == PATH_TCX else
                     f"clsact direct-action filters, handle {FILTER_HANDLE:#x} priority {FILTER_PRIORITY}",
                     self.setting)
        return att

    def detach(self, att: Attachment) -> None:
        for fd in att.link_fds:
            os.close(fd)  # the link goes with its fd (already gone if the interface was deleted)
        att.link_fds = []
        if att.path != PATH_CLSACT:
            return
        lib = _libbpf()
        for point, prog_id in list(att.filters.items()):
            hook, q = _hook(att.ifindex, point), _opts(FILTER_HANDLE, FILTER_PRIORITY)
            # only while it still runs our program: never someone's filter that took the slot
            if lib.bpf_tc_query(ctypes.byref(hook), ctypes.byref(q)) == 0 and q.prog_id == prog_id:
                lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(_opts(FILTER_HANDLE, FILTER_PRIORITY)))
            del att.filters[point]
        if att.created_qdisc:
            self._remove_qdisc_if_empty(att.ifname, att.ifindex)

    # -- TCX ---------------------------------------------------------------------------------
    def _attach_tcx(self, ifname: str, ifindex: int, prog_fds: Dict[str, int]) -> Attachment:
        att = Attachment(ifname, ifindex, PATH_TCX)
        try:
            for direction, _point, attach_type in DIRECTIONS:
                att.link_fds.append(bpf_links.link(prog_fds[f"nw_tc_{direction}"], ifindex, attach_type,
                                                   f"nw_tc_{direction} on {ifname}"))
        except bpf_links.LinkError:
            for fd in att.link_fds:
                os.close(fd)
            raise
        return att

    # -- clsact ------------------------------------------------------------------------------
    def _attach_clsact(self, ifname: str, ifindex: int, prog_fds: Dict[str, int]) -> Attachment:
        lib = _libbpf()
        att = Attachment(ifname, ifindex, PATH_CLSACT)
        r = lib.bpf_tc_hook_create(ctypes.byref(_hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)))
        if r == 0:
            att.created_qdisc = True
            self._remember_created(ifname, ifindex, True)
        elif r != -17:  # -EEXIST: a clsact qdisc is there already; use it, it is not ours
            raise TcAttachError(-r, f"cannot create a clsact qdisc on {ifname}: {os.strerror(-r)}")
        try:
            for direction, point, _attach_type in DIRECTIONS:
                opts = _opts(FILTER_HANDLE, FILTER_PRIORITY, prog_fds[f"nw_tc_{direction}"])
                r = lib.bpf_tc_attach(ctypes.byref(_hook(ifindex, point)), ctypes.byref(opts))
                if r != 0:
                    why = ("handle/priority taken by another filter" if r == -17 else os.strerror(-r))
                    raise TcAttachError(-r, f"cannot attach nw_tc_{direction} on {ifname} (clsact "
                                            f"filter {FILTER_HANDLE:#x} prio {FILTER_PRIORITY}): {why}")
                att.filters[point] = opts.prog_id
        except TcAttachError:
            self.detach(att)
            raise
        return att

    def remove_leftovers(self, ifname: str, ifindex: int) -> int:
        """Filters a previous run of ours left (killed before it could detach): found by program
        name at whatever handle/priority, removed one by one. Returns how many."""
        lib = _libbpf()
        removed = 0
        for direction, point, _attach_type in DIRECTIONS:
            for f in filters_on(ifname, direction):
                if program_name(f) not in OUR_PROGRAMS:
                    continue
                handle = int(str(f["options"].get("handle", "0")), 0)
                prio = int(f.get("pref", 0))
                r = lib.bpf_tc_detach(ctypes.byref(_hook(ifindex, point)), ctypes.byref(_opts(handle, prio)))
                if r == 0:
                    removed += 1
                    log.info("removed a leftover %s filter of ours on %s %s (handle %#x prio %d, prog id %s)",
                             program_name(f), ifname, direction, handle, prio,
                             f["options"].get("prog", {}).get("id", "?"))
        if self._created_before(ifname, ifindex) and has_clsact(ifname):
            self._remove_qdisc_if_empty(ifname, ifindex)
        return removed

    def _remove_qdisc_if_empty(self, ifname: str, ifindex: int) -> None:
        if filters_on(ifname, "ingress") or filters_on(ifname, "egress"):
            log.info("leaving the clsact qdisc on %s: other filters use it", ifname)
        else:
            _libbpf().bpf_tc_hook_destroy(ctypes.byref(_hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)))
        self._remember_created(ifname, ifindex, False)

    # -- which qdiscs we created, across a SIGKILL ------------------------------------------
    def _created(self) -> List[str]:
        if not self._state_file:
            return []
        try:
            with open(self._state_file, encoding="utf-8") as f:
                data = json.load(f)
            return [str(x) for x in data] if isinstance(data, list) else []
        except (OSError, ValueError):
            return []

    def _created_before(self, ifname: str, ifindex: int) -> bool:
        return f"{ifname}:{ifindex}" in self._created()

    def _remember_created(self, ifname: str, ifindex: int, created: bool) -> None:
        if not self._state_file:
            return
        key = f"{ifname}:{ifindex}"
        entries = [e for e in self._created() if e != key] + ([key] if created else [])
        try:
            os.makedirs(os.path.dirname(self._state_file), exist_ok=True)
            write_atomically(self._state_file, lambda f: f.write(json.dumps(entries).encode()))
        except OSError as e:
            log.warning("cannot record the clsact qdiscs we created in %s: %s", self._state_file, e.strerror)
