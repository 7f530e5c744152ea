"""Support for the D-Bus, lifecycle and netwatchctl integration tests: a daemon whose sd_notify
socket is read all the time (as systemd does), a child process with a command name of its own
that makes a known number of loopback TCP connects, and the D-Bus error name of a call.

Everything is started by pid and stopped by that pid, even when a test fails.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tests.harness import (
    BUS_NAME,
    INTERFACE,
    OBJECT_PATH,
    BusctlError,
    DaemonProcess,
    NotifyReceiver,
    PrivateSystemBus,
    StartedUntilExit,
    unvariant,
)

ECONNREFUSED = 111


def wait_notify_line(notify: NotifyReceiver, line: str, since: int = 0, timeout: float = 15) -> int:
    """Index of the first message at or after `since` with `line` as one of its lines."""
    i = notify.index_of(line, since, timeout)
    if i < 0:
        raise AssertionError(f"no {line!r} after message {since}: {notify.messages[since:]!r}")
    return i


# Runs in the child: `ok` connects to a listening port, then `refused` to a bound port that does
# not listen; with a closed IPv6 port (closed6, 0 = none) also a UDP connect() and a refused
# connect to ::1. Prints "done" and waits for stdin to close so the pid stays alive for queries.
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


class ConnectChild(StartedUntilExit):
    """A copy of the Python interpreter named `command` (default `nwtest<hex>`, so its comm is
    unique on the host) that makes `ok` accepted and `refused` refused TCP connects to
    127.0.0.1, and with `extra` a UDP connect and a refused IPv6 TCP connect to ::1."""

    def __init__(self, ok: int, refused: int, command: Optional[str] = None, extra: bool = False) -> None:
        self.ok = ok
        self.refused = refused
        self.extra = extra
        self.command = command or "nwtest" + secrets.token_hex(4)  # 14 bytes: fits the kernel's comm
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-child-"))
        self.proc: Optional[subprocess.Popen] = None
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # bound, never listens
        self.closed6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.port = 0
        self.closed_port = 0
        self.closed6_port = 0
        self.start_usec = 0
        self.start_time = 0.0
        self.end_usec = 0
        self.end_time = 0.0
        self._stop = threading.Event()
        self._acceptor: Optional[threading.Thread] = None

    @property
    def total(self) -> int:
        return self.ok + self.refused + (2 if self.extra else 0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "ConnectChild":
        exe = self.dir / self.command
        shutil.copy(os.path.realpath("/usr/bin/python3"), exe)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.closed.bind(("127.0.0.1", 0))
        self.closed_port = self.closed.getsockname()[1]
        if self.extra:
            self.closed6.bind(("::1", 0))
            self.closed6_port = self.closed6.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()
        self.start_usec = time.time_ns() // 1000
        self.start_time = time.time()
        self.proc = subprocess.Popen(
            [str(exe), "-c", CHILD_SCRIPT, *map(str, (self.ok, self.refused, self.port, self.closed_port,
                                                      self.closed6_port))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if line.strip() != "done":
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"connect child {self.command} failed: {line!r} {err}")
        self.end_usec = time.time_ns() // 1000
        self.end_time = time.time()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.close()

    def stop(self) -> None:
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


def as_user(user: str, group: str, groups: Optional[List[str]] = None) -> List[str]:
    """setpriv prefix running a command as `user` with primary `group` and exactly `groups`
    as supplementary groups (none when not given)."""
    supplementary = [f"--groups={','.join(groups)}"] if groups else ["--clear-groups"]
    return ["setpriv", f"--reuid={user}", f"--regid={group}", *supplementary]


def dbus_send_error(bus: PrivateSystemBus, method: str, args: List[str], prefix: Optional[List[str]] = None,
                    interface: str = INTERFACE) -> Tuple[str, str]:
    """Calls a method with dbus-send (which, unlike busctl, prints the D-Bus error name) and
    returns (error name, message); ("", "") when the call succeeded."""
    cmd = [*(prefix or []), "dbus-send", f"--bus={bus.address}", "--print-reply", f"--dest={BUS_NAME}",
           OBJECT_PATH, f"{interface}.{method}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode == 0:
        return "", ""
    first = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
    if not first.startswith("Error "):
        raise AssertionError(f"unexpected dbus-send failure: {r.stderr!r}")
    name, _, message = first[len("Error "):].partition(": ")
    return name, message


def whole_devices(d: DaemonProcess) -> Dict[str, Dict]:
    """Every device by MAC with all its fields: ListDevices lists summaries (no name lists),
    GetDevice gives each one whole. A device gone in between (expired) is left out."""
    whole = {}
    for summary in map(unvariant, d.call("ListDevices")[0]):
        try:
            whole[summary["mac"]] = unvariant(d.call("GetDevice", "s", summary["mac"])[0])
        except BusctlError as e:
            if "no device with MAC" not in e.stderr:
                raise
    return whole
