"""Support for the ebpf-server API conformance test: a network namespace of the test's own, so
the daemon can listen on localhost:8080 exactly as ebpf-server's README says without colliding
with anything else on a shared machine; processes with known connects; and the two clients
(curl, and Python's urllib) that run inside that namespace.

Everything is created with a random suffix, started by pid, and removed even when a test fails.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tests.support.processes import ConnectChild

CLONE_NEWNET = 0x40000000


class NetNamespace:
    """`ip netns add nwd13-<hex>` with loopback up; removed on exit."""

    def __init__(self) -> None:
        self.name = "nwd13-" + secrets.token_hex(4)
        self.path = f"/run/netns/{self.name}"

    def __enter__(self) -> "NetNamespace":
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, timeout=30)
        try:
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, capture_output=True, timeout=30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def prefix(self) -> List[str]:
        """Runs a command in this namespace's network only (no new mount namespace, unlike
        `ip netns exec`, so tracefs and cgroups stay what the daemon expects)."""
        return ["nsenter", f"--net={self.path}"]

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


@dataclass(frozen=True)
class Expected:
    """One connect() the API must list: destination, protocol, return code."""

    destination: str
    protocol: str
    return_code: int


class KnownConnects(ConnectChild):
    """The connect child (tests/support/processes.py) under a command name of the
    test's choosing, with the listing ebpf-server's API must give for it."""

    def __init__(self, command: str, ok: int, refused: int, extra: bool) -> None:
        super().__init__(ok, refused, command=command, extra=extra)

    def expected(self) -> List[Expected]:
        """Every connect() in the order the child made them."""
        out = [Expected(f"127.0.0.1:{self.port}", "TCP", 0)] * self.ok
        out += [Expected(f"127.0.0.1:{self.closed_port}", "TCP", -111)] * self.refused
        if self.extra:
            out += [Expected(f"127.0.0.1:{self.closed_port}", "UDP", 0), Expected(f"[::1]:{self.closed6_port}", "TCP", -111)]
        return out


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    headers: Dict[str, str]


class Clients:
    """The same request through curl (run in the namespace) or urllib (from a thread that
    entered the namespace with setns(2): sockets belong to the namespace of the thread that
    creates them)."""

    def __init__(self, ns: NetNamespace, base: str) -> None:
        self.ns = ns
        self.base = base
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-clients-"))
        self._pool = concurrent.futures.ThreadPoolExecutor(1, initializer=_enter_netns, initargs=(ns.path,))

    def close(self) -> None:
        self._pool.shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def request(self, client: str, method: str, target: str, body: Optional[bytes] = None) -> Reply:
        if client == "curl":
            return self.curl(method, target, body)
        return self._pool.submit(_urllib, method, self.base + target, body).result(timeout=60)

    def curl(self, method: str, target: str, body: Optional[bytes]) -> Reply:
        out, head = self.dir / "body", self.dir / "head"
        cmd = [*self.ns.prefix(), "curl", "-sS", "-o", str(out), "-D", str(head), "-w", "%{http_code}", "-X", method]
        if method == "HEAD":
            cmd[cmd.index("-X"):] = ["-I"]
        if body is not None:
            cmd += ["--data-binary", "@-", "-H", "Content-Type: application/json"]
        r = subprocess.run([*cmd, self.base + target], input=body or b"", capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        headers = _headers(head.read_bytes().decode("latin-1"))
        # with -I curl writes the head to -o and never reads a body (raw() checks none is sent)
        return Reply(int(r.stdout), headers.get("content-type", ""), b"" if method == "HEAD" else out.read_bytes(), headers)

    def raw(self, request: bytes, port: int = 8080) -> bytes:
        """Bytes sent as they are to 127.0.0.1:8080 in the namespace; everything the server
        answers until it closes."""
        return self._pool.submit(_raw, request, port).result(timeout=60)

    def shell(self, script: str) -> Tuple[int, str, str]:
        """A shell command line as a user would type it, in the namespace."""
        r = subprocess.run([*self.ns.prefix(), "bash", "-c", script], capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr


def _enter_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def _raw(request: bytes, port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _urllib(method: str, url: str, body: Optional[bytes]) -> Reply:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Reply(r.status, r.headers.get("Content-Type", ""), r.read(), {k.lower(): v for k, v in r.headers.items()})
    except urllib.error.HTTPError as e:
        with e:  # its connection closed
            return Reply(e.code, e.headers.get("Content-Type", ""), e.read(), {k.lower(): v for k, v in e.headers.items()})


def _headers(text: str) -> Dict[str, str]:
    """Header fields of the last response in a curl -D dump (after any 100 Continue)."""
    block = [b for b in text.split("\r\n\r\n") if b.strip()][-1]
    fields = {}
    for line in block.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields
