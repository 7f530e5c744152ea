"""Processes with a command name of their own (a copy of the Python interpreter named
`nwc<hex>`, so its comm is unique on the host) that do on request exactly the syscalls a test
counts: unconnected UDP sends, refused TCP connects to 127.0.0.1, or a family of forked
children that each make one connect and stay alive (so their pids stay in the kernel's map).

Started by pid, stopped by that pid (and its children by theirs), even when a test fails.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional

from tests.harness import StartedUntilExit

# Reads commands on stdin, one per line, answers one line each:
#   udp N PORT      N unconnected sendto() to 127.0.0.1:PORT -> "ok"
#   refused N PORT  N TCP connects to 127.0.0.1:PORT (nothing listens) -> "ok"
#   fork N PORT     N children, each one refused connect then blocked on a pipe -> their pids
# On stdin EOF: the children's pipe closes (they exit), then the process itself exits.
SCRIPT = r"""
import os, socket, sys
children, hold_r, hold_w = [], None, None

def refused(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        pass
    else:
        sys.exit("connect to a closed port succeeded")
    s.close()

for line in sys.stdin:
    verb, n, port = line.split()
    n, port = int(n), int(port)
    if verb == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(n):
            s.sendto(b"x", ("127.0.0.1", port))
        s.close()
        print("ok", flush=True)
    elif verb == "refused":
        for _ in range(n):
            refused(port)
        print("ok", flush=True)
    elif verb == "fork":
        hold_r, hold_w = os.pipe()
        done_r, done_w = os.pipe()
        pids = []
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                os.close(hold_w)
                os.close(done_r)
                refused(port)
                os.write(done_w, b".")
                os.read(hold_r, 1)  # until the parent closes the pipe
                os._exit(0)
            pids.append(pid)
        os.close(done_w)
        got = 0
        while got < n:
            got += len(os.read(done_r, n))
        children += pids
        print(" ".join(map(str, pids)), flush=True)
if hold_w is not None:
    os.close(hold_w)
for pid in children:
    os.waitpid(pid, 0)
"""


def named_python(directory: Path, command: str) -> Path:
    """A copy of the Python interpreter at directory/command: processes started from it carry
    `command` as their kernel comm (at most 15 bytes are kept), which a test makes unique."""
    if len(command.encode()) > 15:
        raise ValueError(f"{command!r} is longer than the kernel's 15-byte comm")
    exe = directory / command
    shutil.copy(os.path.realpath("/usr/bin/python3"), exe)
    return exe


class NamedChild(StartedUntilExit):
    def __init__(self) -> None:
        self.command = "nwc" + secrets.token_hex(5)  # 13 bytes: fits the kernel's 15-byte comm
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-named-"))
        self.proc: Optional[subprocess.Popen] = None
        self.children: List[int] = []
        # a bound UDP socket that drops what it gets, and a bound TCP port that never listens
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.udp_port = self.sink.getsockname()[1]
        self.closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.closed.bind(("127.0.0.1", 0))
        self.closed_port = self.closed.getsockname()[1]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "NamedChild":
        exe = named_python(self.dir, self.command)
        self.proc = subprocess.Popen([str(exe), "-c", SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        return self

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"{self.command} failed on {line!r}: {self.proc.stderr.read()}")
        return answer

    def udp_sends(self, n: int) -> None:
        assert self._ask(f"udp {n} {self.udp_port}") == "ok"

    def refused_connects(self, n: int) -> None:
        assert self._ask(f"refused {n} {self.closed_port}") == "ok"

    def fork_connecting(self, n: int) -> List[int]:
        pids = [int(p) for p in self._ask(f"fork {n} {self.closed_port}").split()]
        self.children += pids
        return pids

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # the children's pipe closes with it; each exits
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                for pid in self.children:  # ours, by pid
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                self.proc.kill()
                self.proc.wait()
        self.sink.close()
        self.closed.close()
        shutil.rmtree(self.dir, ignore_errors=True)
