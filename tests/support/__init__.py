"""The test harness, an importable package (the integration, system and kernel tests, and bench/,
use it; it imports no test module):

  daemon.py       a private system bus, systemd's side of sd_notify, netwatchd in a process of its
                  own on the shipped config (config_rule.py), busctl/dbus-send/netwatchctl callers
  config_rule.py  the rule of tests/README.md, enforced for every daemon a test starts
  world.py        World: a temporary directory, the bus, a LAN, a journald, daemons and background
                  processes, all removed by pid at the end (tests/conftest.py's `make_world`)
  lan.py          a LAN of network namespaces on a bridge, and the scripts run inside them
  frames.py       Ethernet frames built by hand;  journal.py  a private systemd-journald
  processes.py    processes read line by line, with command names of their own, stopped by pid
  oracles.py      expected values from outside the code under test (the README's tables)
  connect_load.py refused connect floods over many flows (the busy-host test, bench/)

wait_for() is the one way a test waits: on a condition, never on a fixed sleep.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10, what: str = "the condition",
             interval: float = 0.1, detail: Optional[Callable[[], str]] = None) -> T:
    """Calls `condition` until it returns something true, and returns that. A KeyError or
    IndexError (what was asked about is not there yet) counts as false. On timeout an
    AssertionError names `what`, with `detail()` (a daemon's log, say) when given."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (KeyError, IndexError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)
