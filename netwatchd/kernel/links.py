"""Attaching programs as BPF links (libbpf via ctypes): to a cgroup, or to an interface (TCX).

bcc only offers the legacy BPF_PROG_ATTACH, whose attachments outlive the process: after a
SIGKILL they would stay on the root cgroup. A link is owned by its file descriptor, so the
kernel detaches it when the daemon exits, however it exits: nothing of ours is left behind.
"""
from __future__ import annotations

import ctypes
import os

# enum bpf_attach_type (uapi/linux/bpf.h)
CGROUP_SOCK_OPS = 3
CGROUP_INET4_CONNECT = 10
CGROUP_INET6_CONNECT = 11
CGROUP_UDP4_SENDMSG = 14
CGROUP_UDP6_SENDMSG = 15
TCX_INGRESS = 46
TCX_EGRESS = 47

_libbpf = None


def _lib() -> ctypes.CDLL:
    global _libbpf
    if _libbpf is None:
        _libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
        _libbpf.bpf_link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        _libbpf.bpf_link_create.restype = ctypes.c_int
    return _libbpf


class LinkError(OSError):
    """A program could not be attached; names the program and the target."""


def link(prog_fd: int, target_fd_or_ifindex: int, attach_type: int, what: str) -> int:
    """A BPF link: the target is a cgroup fd, or an ifindex for TCX."""
    fd = _lib().bpf_link_create(prog_fd, target_fd_or_ifindex, attach_type, None)
    if fd < 0:
        err = ctypes.get_errno() or -fd
        raise LinkError(err, f"cannot attach {what}: {os.strerror(err)}")
    return fd
