"""Ending the processes a test started, by pid: SIGTERM to all first (they stop in parallel),
then a bounded wait for each, SIGKILL for one that does not go, and its stdout closed."""
from __future__ import annotations

import signal
import subprocess
from typing import Iterable


def stop_processes(procs: Iterable[subprocess.Popen], timeout: float = 5) -> None:
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
        if proc.stdout:
            proc.stdout.close()
