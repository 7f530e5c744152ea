"""Back on the system bus after losing it.

dbus-daemon restarted (an upgrade of the dbus package does that), or the connection was closed
under us: without this the daemon would keep watching but answer nobody — netwatchctl, busctl and
AlertRaised subscribers would all find the name gone until someone restarts netwatchd. So the loss
is said once in the log, and the name is taken back as soon as a bus answers again.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from netwatchd.bus_names import BUS_NAME

log = logging.getLogger(__name__)

FIRST_RETRY_SEC = 0.5
LONGEST_RETRY_SEC = 30.0


async def stay_on_bus(bus, connect: Callable[[], Awaitable], serve: Callable, on_new_bus: Callable) -> None:
    """Runs until cancelled: whenever `bus` disconnects, `connect()` (own the name) again with
    backoff, `serve(new_bus)` (export the same objects) and hand it to `on_new_bus`."""
    while True:
        try:
            await bus.wait_for_disconnect()
            why = "the bus closed the connection"
        except Exception as e:  # dbus-fast reports the error that ended the connection
            why = f"{type(e).__name__}: {e}"
        log.error("lost the system bus (%s): %s answers nobody until it is back; reconnecting", why, BUS_NAME)
        delay = FIRST_RETRY_SEC
        failures = 0
        while True:
            try:
                bus = await connect()
                break
            except Exception as e:  # no bus yet, or the name taken: try again, say it once
                failures += 1
                if failures == 1:
                    log.warning("system bus not back yet (%s); retrying up to every %.0f s", e, LONGEST_RETRY_SEC)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LONGEST_RETRY_SEC)
        serve(bus)
        on_new_bus(bus)
        log.info("back on the system bus as %s", BUS_NAME)
