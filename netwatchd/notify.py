"""sd_notify: READY/RELOADING/STOPPING/STATUS and the watchdog. The only sdnotify importer.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the daemon runs the same by hand.
"""
from __future__ import annotations

import os
import time

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self._n = sdnotify.SystemdNotifier()

    def _send(self, *lines: str) -> None:
        if os.environ.get("NOTIFY_SOCKET"):
            self._n.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd >= 253 match this to the reload it asked for
        self._send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self._send("STOPPING=1", "STATUS=stopping")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")


def watchdog_interval_sec() -> float:
    """Half the watchdog timeout systemd gave us, or 0 when there is no watchdog for us."""
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return 0.0
    return usec / 2e6
