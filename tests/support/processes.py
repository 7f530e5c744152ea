"""Processes a test starts, each stopped by its pid even when the test fails: stop_processes() for
a list of them; LineProcess, read line by line in the background so that a pipe never fills and a
test can wait for a line; Subscriber, a plain subscriber to one of netwatchd's signals;
processes with a command name of their own (named_python), so their kernel comm, and the
subjects of what netwatchd says about them, belong to the test alone: NamedChild (syscalls on
request) and ConnectChild (a known set of connects).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Union

REPO = Path(__file__).resolve().parents[2]
SIGNAL_SUBSCRIBER = Path(__file__).resolve().parent / "signal_subscriber.py"
Match = Union[str, Callable[[str], bool]]


def stop_processes(procs: Iterable[subprocess.Popen], timeout: float = 5) -> None:
    """SIGTERM to all first (they stop in parallel), then a bounded wait for each, SIGKILL for
    one that does not go, and its stdout closed."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        close_pipes(proc)


def close_pipes(proc: Optional[subprocess.Popen]) -> None:
    """Our ends of a finished process's pipes."""
    for stream in (proc.stdin, proc.stdout, proc.stderr) if proc is not None else ():
        if stream is not None and not stream.closed:
            stream.close()


class StartedUntilExit:
    """`with Thing() as t`: start(), and stop() on the way out -- also when start() fails half
    way, so that what it had made (processes, namespaces, files) is not left behind."""

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def named_python(directory: Path, command: str, copy: bool = True) -> Path:
    """The Python interpreter at directory/command (a copy, or a symlink to this venv's): processes
    started from it carry `command` as their kernel comm (at most 15 bytes are kept), which a test
    makes unique."""
    if len(command.encode()) > 15:
        raise ValueError(f"{command!r} is longer than the kernel's 15-byte comm")
    exe = Path(directory) / command
    if copy:
        shutil.copy(os.path.realpath("/usr/bin/python3"), exe)
    else:
        os.symlink(os.path.realpath(sys.executable), exe)
    return exe


class LineProcess:
    """stop() closes stdin first when the process ends on that (ends_on_stdin_eof), else it
    sends SIGTERM straight away (netwatchctl watch, busctl monitor). `bus`: the private system
    bus it talks to (DBUS_SYSTEM_BUS_ADDRESS)."""

    def __init__(self, argv: List[str], bus=None, prefix: Optional[List[str]] = None,
                 ends_on_stdin_eof: bool = False) -> None:
        self.ends_on_stdin_eof = ends_on_stdin_eof
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if bus is not None:
            env["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
        self.proc = subprocess.Popen([*(prefix or []), *argv], env=env, cwd="/", stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.out: List[str] = []
        self.err: List[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, lines), daemon=True)
                         for s, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for r in self._readers:
            r.start()

    @staticmethod
    def _read(stream, lines: List[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(self, match: Match, since: int = 0, timeout: float = 15, stream: str = "out") -> int:
        """Index of the first line of stdout (or stderr) at or after `since` that equals `match`
        (or satisfies it, when it is a function)."""
        lines = self.out if stream == "out" else self.err
        test = match if callable(match) else (lambda line: line == match)
        deadline = time.monotonic() + timeout
        while True:
            for i in range(since, len(lines)):
                if test(lines[i]):
                    return i
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self._reading()):
                raise AssertionError(f"no line {match!r} in {stream} after line {since} of {self.proc.args}:\n"
                                     f"stdout {self.out!r}\nstderr {self.err!r}\nexit {self.proc.poll()}")
            time.sleep(0.02)

    def _reading(self) -> bool:
        return any(r.is_alive() for r in self._readers)

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def ask(self, text: str, answer: Match, timeout: float = 15) -> str:
        """Sends a line; the first line after it that matches `answer`."""
        since = len(self.out)
        self.send(text)
        return self.out[self.wait_line(answer, since, timeout)]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15) -> int:
        """Its exit status once it ended by itself, everything it printed read."""
        rc = self.proc.wait(timeout)
        for r in self._readers:
            r.join(5)
        close_pipes(self.proc)
        return rc

    def stop(self) -> Optional[int]:
        try:
            self.proc.stdin.close()
            if self.ends_on_stdin_eof:
                self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for r in self._readers:
            r.join(5)
        close_pipes(self.proc)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Subscriber(LineProcess):
    """signal_subscriber.py for `member` (AlertRaised, PatternSeen), as whoever `prefix` makes it;
    ready when its match rule is in place."""

    def __init__(self, bus, prefix: Optional[List[str]] = None, member: str = "AlertRaised") -> None:
        super().__init__([sys.executable, str(SIGNAL_SUBSCRIBER), member], bus, prefix, ends_on_stdin_eof=True)
        self.wait_line("subscribed", timeout=30)

    def signals_after_sync(self) -> List[list]:
        """Every signal delivered so far (see signal_subscriber.py: sync)."""
        self.ask("sync", "synced")
        return [json.loads(line[len("signal "):]) for line in self.out if line.startswith("signal ")]


# Reads commands on stdin, one per line, answers one line each:
#   udp N PORT      N unconnected sendto() to 127.0.0.1:PORT -> "ok"
#   refused N PORT  N TCP connects to 127.0.0.1:PORT (nothing listens) -> "ok"
#   fork N PORT     N children, each one refused connect then blocked on a pipe -> their pids
# On stdin EOF: the children's pipe closes (they exit), then the process itself exits.
NAMED_CHILD = r"""
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


class NamedChild(StartedUntilExit):
    """A process named `nwc<hex>` that does on request exactly the syscalls a test counts:
    unconnected UDP sends, refused TCP connects to 127.0.0.1, or a family of forked children
    that each make one connect and stay alive (so their pids stay in the kernel's map)."""

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
        self.proc = subprocess.Popen([str(exe), "-c", NAMED_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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
        close_pipes(self.proc)
        self.sink.close()
        self.closed.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# Runs in the child: `ok` connects to a listening port, then `refused` to a bound port that does
# not listen; with a closed IPv6 port (closed6, 0 = none) also a UDP connect() and a refused
# connect to ::1. Prints "done" and waits for stdin to close so the pid stays alive for queries.
CONNECT_CHILD = r"""
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
ECONNREFUSED = 111


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
        self.port = self.closed_port = self.closed6_port = 0
        self.start_usec = self.end_usec = 0
        self.start_time = self.end_time = 0.0
        self._stop = threading.Event()
        self._acceptor: Optional[threading.Thread] = None

    @property
    def total(self) -> int:
        return self.ok + self.refused + (2 if self.extra else 0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "ConnectChild":
        exe = named_python(self.dir, self.command)
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
            [str(exe), "-c", CONNECT_CHILD, *map(str, (self.ok, self.refused, self.port, self.closed_port,
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
        close_pipes(self.proc)
        for s in (self.listener, self.closed, self.closed6):
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)
