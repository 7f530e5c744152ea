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
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

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


# Runs in a child named by the test: connects of every kind the API reports, in a known order, then
# prints "done" and waits for stdin to close so the pid stays alive for queries.
CHILD_SCRIPT = r"""
import socket, sys
ok, refused, port, closed, closed6 = map(int, sys.argv[1:6])
for _ in range(ok):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", port))
    s.close()
for _ in range(refused):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect(("127.0.0.1", closed))
    except ConnectionRefusedError:
        pass
    else:
        sys.exit("connect to the closed port succeeded")
    s.close()
if closed6:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # UDP connect(): nothing is sent, returns 0
    u.connect(("127.0.0.1", closed))
    u.close()
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        s.connect(("::1", closed6))
    except ConnectionRefusedError:
        pass
    else:
        sys.exit("connect to the closed IPv6 port succeeded")
    s.close()
print("done", flush=True)
sys.stdin.read()
"""


@dataclass(frozen=True)
class Expected:
    """One connect() the API must list: destination, protocol, return code."""

    destination: str
    protocol: str
    return_code: int


class KnownConnects:
    """A copy of the Python interpreter under a name of the test's choosing (its comm) that makes
    `ok` accepted and `refused` refused TCP connects to 127.0.0.1, and with `extra` a UDP connect
    and a refused IPv6 TCP connect to ::1."""

    def __init__(self, command: str, ok: int, refused: int, extra: bool) -> None:
        self.command = command
        self.ok, self.refused, self.extra = ok, refused, extra
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-known-"))
        self.proc: Optional[subprocess.Popen] = None
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # bound, never listens
        self.closed6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.start_time = self.end_time = 0.0
        self._stop = threading.Event()
        self._acceptor: Optional[threading.Thread] = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    @property
    def closed_port(self) -> int:
        return self.closed.getsockname()[1]

    @property
    def closed6_port(self) -> int:
        return self.closed6.getsockname()[1] if self.extra else 0

    def expected(self) -> List[Expected]:
        """Every connect() in the order the child made them."""
        out = [Expected(f"127.0.0.1:{self.port}", "TCP", 0)] * self.ok
        out += [Expected(f"127.0.0.1:{self.closed_port}", "TCP", -111)] * self.refused
        if self.extra:
            out += [Expected(f"127.0.0.1:{self.closed_port}", "UDP", 0), Expected(f"[::1]:{self.closed6_port}", "TCP", -111)]
        return out

    def __enter__(self) -> "KnownConnects":
        try:
            exe = self.dir / self.command
            shutil.copy(os.path.realpath("/usr/bin/python3"), exe)
            self.listener.bind(("127.0.0.1", 0))
            self.listener.listen(1024)
            self.listener.settimeout(0.2)
            self.closed.bind(("127.0.0.1", 0))
            if self.extra:
                self.closed6.bind(("::1", 0))
            self._acceptor = threading.Thread(target=self._accept, daemon=True)
            self._acceptor.start()
            self.start_time = time.time()
            self.proc = subprocess.Popen(
                [str(exe), "-c", CHILD_SCRIPT, *map(str, (self.ok, self.refused, self.port, self.closed_port, self.closed6_port))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = self.proc.stdout.readline()
            if line.strip() != "done":
                err = self.proc.stderr.read() if self.proc.poll() is not None else ""
                raise RuntimeError(f"connect child {self.command} failed: {line!r} {err}")
            self.end_time = time.time()
            return self
        except BaseException:
            self.__exit__()
            raise

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.close()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(2)
        for s in (self.listener, self.closed, self.closed6):
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


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
        return Reply(e.code, e.headers.get("Content-Type", ""), e.read(), {k.lower(): v for k, v in e.headers.items()})


def _headers(text: str) -> Dict[str, str]:
    """Header fields of the last response in a curl -D dump (after any 100 Continue)."""
    block = [b for b in text.split("\r\n\r\n") if b.strip()][-1]
    fields = {}
    for line in block.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields
