"""What the device path did, said to the log in one line per interval, not one per device.

Every new device, address and address move is something a device on the LAN can cause at will:
one log line each would let a flood (5000 forged MACs, an ARP flood cycling addresses) push
tens of thousands of lines into journald, whose per-unit rate limit (RateLimitBurst=) then
drops whatever comes next -- alerts included. Each such event is a debug line; at info level
this says, at most once per INTERVAL_SEC, how many of each there were.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

INTERVAL_SEC = 60.0

# what is counted, as the summary line says it
WORDS = {
    "new": "new devices",
    "address": "new address bindings",
    "moved": "address moves",
    "evicted": "devices evicted from the full inventory",
    "expired": "idle devices forgotten",
    "kernel_evicted": "kernel device-map entries evicted",
}


class ActivityLog:
    def __init__(self, log: logging.Logger, clock: Callable[[], float], interval_sec: float = INTERVAL_SEC):
        self.log = log
        self.clock = clock
        self.interval_sec = interval_sec
        self.counts: Counter = Counter()
        self._since = clock()

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def flush(self, force: bool = False) -> None:
        """The summary line, when the interval is over (or `force`) and anything happened."""
        now = self.clock()
        if not force and now - self._since < self.interval_sec:
            return
        if self.counts:
            parts = ", ".join(f"{self.counts[k]} {WORDS[k]}" for k in WORDS if self.counts[k])
            self.log.info("devices in the last %.0f s: %s", now - self._since, parts)
        self.counts.clear()
        self._since = now
