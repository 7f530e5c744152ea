"""Processes for the alert D-Bus tests, read line by line in the background so that a pipe never
fills and a test can wait for a line with a timeout: the stand-in service (alert_service.py),
plain subscribers (signal_subscriber.py), `netwatchctl watch`, `busctl monitor`.

Every process is started and stopped by its pid, even when a test fails.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

from tests.harness import PrivateSystemBus

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

Match = Union[str, Callable[[str], bool]]


class LineProcess:
    """stop() closes stdin first when the process ends on that (ends_on_stdin_eof), else it
    sends SIGTERM straight away (netwatchctl watch, busctl monitor)."""

    def __init__(self, argv: List[str], bus: PrivateSystemBus, prefix: Optional[List[str]] = None,
                 ends_on_stdin_eof: bool = False) -> None:
        self.ends_on_stdin_eof = ends_on_stdin_eof
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address, PYTHONPATH=str(REPO))
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

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15) -> int:
        rc = self.proc.wait(timeout)
        for r in self._readers:
            r.join(5)
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
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class AlertService(LineProcess):
    """alert_service.py as root on `bus`; ready when it owns the name."""

    def __init__(self, bus: PrivateSystemBus, state_dir: Path, *options: str) -> None:
        super().__init__([sys.executable, str(HERE / "alert_service.py"), str(state_dir), *options], bus,
                         ends_on_stdin_eof=True)
        self.wait_line("ready", timeout=30)

    def command(self, command: Dict) -> List[Dict]:
        """Sends one command; the alerts it raised, as alert dicts (Alert.to_dict)."""
        since = len(self.out)
        self.send(json.dumps(command))
        done = self.wait_line("done", since)
        return [json.loads(line[len("alert "):]) for line in self.out[since:done] if line.startswith("alert ")]

    def tick(self, **observation) -> List[Dict]:
        """One tick with `observation`; with new devices, the next (empty) tick too, since the
        detector reports a new device a tick after it is first seen (alerting/address_moves.py)."""
        observation.setdefault("time_usec", time.time_ns() // 1000)
        raised = self.command({"tick": observation})
        if observation.get("new_devices"):
            raised += self.command({"tick": {"time_usec": observation["time_usec"] + 1000}})
        return raised


class Subscriber(LineProcess):
    """signal_subscriber.py AlertRaised, as whoever `prefix` makes it; ready when its match rule is
    in place."""

    def __init__(self, bus: PrivateSystemBus, prefix: Optional[List[str]] = None) -> None:
        super().__init__([sys.executable, str(HERE / "signal_subscriber.py"), "AlertRaised"], bus, prefix, ends_on_stdin_eof=True)
        self.wait_line("subscribed", timeout=30)

    def signals_after_sync(self) -> List[List[str]]:
        """Every AlertRaised delivered so far (see signal_subscriber.py: sync)."""
        since = len(self.out)
        self.send("sync")
        self.wait_line("synced", since)
        return [json.loads(line[len("signal "):]) for line in self.out if line.startswith("signal ")]


def new_devices(n: int, start: int = 0) -> List[Dict]:
    """n new devices for one tick's observation, with locally unique, non-randomized MACs."""
    return [{"mac": "00:16:3e:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255), "randomized": False,
             "vendor": "Xensource, Inc.", "interface": "veth-test", "ipv4": [f"10.9.{i >> 8 & 255}.{i & 255}"],
             "ipv6": []} for i in range(start, start + n)]
