"""Loopback connect load for the benchmarks: a listener on 127.0.0.1 drained by acceptor
processes, and connect workers in a tight socket/connect/close loop with SO_LINGER 0 (an RST on
close, so no TIME_WAIT and no port exhaustion however many connects).

Every process is started by pid and stopped by that pid; each also asks the kernel to end it if
the benchmark dies (PR_SET_PDEATHSIG), so an interrupted run leaves nothing behind.

Workers are long-lived: the benchmark sends "N" on a worker's stdin, the worker makes exactly N
connect() calls and answers one JSON line with what it counted itself. The benchmark compares
those counts with what netwatchd reports for the worker's pid.

    python bench/loadgen.py worker PORT     (started by LoopbackLoad)
    python bench/loadgen.py acceptor FD     (started by LoopbackLoad, FD = the listening socket)
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List

HOST = "127.0.0.1"
BACKLOG = 65535  # the kernel caps it at net.core.somaxconn
LINGER_RST = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0
PR_SET_PDEATHSIG = 1


# -- the child processes ---------------------------------------------------------------------
def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent is already gone
        os._exit(1)


def worker_main(port: int) -> None:
    _die_with_parent()
    addr = (HOST, port)
    new_socket = socket.socket
    sol, linger = socket.SOL_SOCKET, socket.SO_LINGER
    out = sys.stdout
    out.write(json.dumps({"pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        line = line.strip()
        if line == "exit" or not line:
            break
        n = int(line)
        ok = failed = 0
        errors: Dict[str, int] = {}
        t0 = time.monotonic()
        for _ in range(n):
            s = new_socket()
            try:
                s.setsockopt(sol, linger, LINGER_RST)
                try:
                    s.connect(addr)
                    ok += 1
                except OSError as e:
                    failed += 1
                    name = errno_name(e.errno)
                    errors[name] = errors.get(name, 0) + 1
            finally:
                s.close()
        t1 = time.monotonic()
        out.write(json.dumps({"calls": n, "ok": ok, "failed": failed, "errors": errors, "t0": t0, "t1": t1}) + "\n")
        out.flush()


def errno_name(num) -> str:
    import errno

    return errno.errorcode.get(num, str(num))


def acceptor_main(fd: int) -> None:
    _die_with_parent()
    listener = socket.socket(fileno=fd)
    accept, close = listener._accept, os.close  # the raw fd: no socket object per connection
    while True:
        try:
            conn, _ = accept()
        except (ConnectionAbortedError, InterruptedError):
            continue
        close(conn)


# -- the benchmark's side --------------------------------------------------------------------
@dataclass
class PhaseResult:
    """One batch of connects spread over all workers."""

    name: str
    per_pid: Dict[int, Dict] = field(default_factory=dict)  # pid -> the worker's own counts
    wall_sec: float = 0.0

    @property
    def calls(self) -> int:
        return sum(r["calls"] for r in self.per_pid.values())

    @property
    def failed(self) -> int:
        return sum(r["failed"] for r in self.per_pid.values())

    @property
    def rate(self) -> float:
        """connect() calls per second from the first worker's start to the last one's end."""
        t0 = min(r["t0"] for r in self.per_pid.values())
        t1 = max(r["t1"] for r in self.per_pid.values())
        return self.calls / (t1 - t0) if t1 > t0 else 0.0

    def as_dict(self) -> Dict:
        return {"name": self.name, "calls": self.calls, "failed": self.failed, "rate_per_sec": self.rate,
                "wall_sec": self.wall_sec, "per_pid": {str(k): v for k, v in self.per_pid.items()}}


def add_counts(phases: List[PhaseResult]) -> Dict[int, Dict[str, int]]:
    """Per pid: calls, ok and failed summed over phases."""
    total: Dict[int, Dict[str, int]] = {}
    for phase in phases:
        for pid, r in phase.per_pid.items():
            t = total.setdefault(pid, {"calls": 0, "ok": 0, "failed": 0})
            for k in t:
                t[k] += r[k]
    return total


class LoopbackLoad:
    def __init__(self, workers: int = 4, acceptors: int = 2) -> None:
        self.n_workers = workers
        self.n_acceptors = acceptors
        self.listener: socket.socket | None = None
        self.port = 0
        self.acceptors: List[subprocess.Popen] = []
        self.workers: List[subprocess.Popen] = []
        self.worker_pids: List[int] = []

    def start(self) -> "LoopbackLoad":
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(BACKLOG)
        self.port = self.listener.getsockname()[1]
        me = os.path.abspath(__file__)
        fd = self.listener.fileno()
        for _ in range(self.n_acceptors):
            self.acceptors.append(subprocess.Popen(
                [sys.executable, me, "acceptor", str(fd)], pass_fds=(fd,), stdin=subprocess.DEVNULL))
        for _ in range(self.n_workers):
            self.workers.append(subprocess.Popen(
                [sys.executable, me, "worker", str(self.port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1))
        for w in self.workers:
            hello = w.stdout.readline()
            if not hello:
                raise RuntimeError(f"load worker {w.pid} did not start")
            self.worker_pids.append(json.loads(hello)["pid"])
        return self

    def run(self, name: str, total: int) -> PhaseResult:
        """`total` connects spread evenly over the workers, all running at once."""
        share, extra = divmod(total, self.n_workers)
        t0 = time.monotonic()
        for i, w in enumerate(self.workers):
            w.stdin.write(f"{share + (1 if i < extra else 0)}\n")
            w.stdin.flush()
        result = PhaseResult(name)
        for pid, w in zip(self.worker_pids, self.workers):
            line = w.stdout.readline()
            if not line:
                raise RuntimeError(f"load worker {pid} ended during phase {name!r}")
            result.per_pid[pid] = json.loads(line)
        result.wall_sec = time.monotonic() - t0
        return result

    def pids(self) -> List[int]:
        return [p.pid for p in self.workers + self.acceptors]

    def stop(self) -> None:
        for w in self.workers:
            try:
                w.stdin.write("exit\n")
                w.stdin.close()
            except (OSError, ValueError):
                pass
        for p in self.workers + self.acceptors:
            if p.poll() is None:
                p.terminate()
        for p in self.workers + self.acceptors:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def __enter__(self) -> "LoopbackLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends a child at once, quietly
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        worker_main(int(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "acceptor":
        acceptor_main(int(sys.argv[2]))
    else:
        sys.exit(__doc__)
