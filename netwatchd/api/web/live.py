"""The open pages' live feed: one server-sent event per tick (GET /api/events).

After each tick (ReadModel.add_tick_listener) the hub builds one small event, the same for every
page: the tick's time and totals, the device count, the alert count and the newest alert's id.
A page compares them with what it shows and fetches only what changed (a new device, a new
alert), so a page is current within a tick of the event, and a tick costs the daemon one
event built and one short write per open page, whatever the page shows.

A page that reads slowly never holds the tick up nor piles up events: each page has one slot,
the newest event, written when its connection can take it (older unsent ones are dropped: each
event says the whole state). The browser's EventSource reconnects by itself (`retry:`), after
a daemon restart too, and then gets the current event at once.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, Optional, Set

from netwatchd.read_model import ReadModel

MAX_PAGES = 128  # open live pages per daemon; more get 503 (the listener's connection cap is 256)
RETRY_MS = 1000  # how soon a browser reconnects after the stream ends (a daemon restart)
KEEPALIVE_SEC = 15.0  # a comment line when no tick came (a proxy's idle timeout, a dead peer)


class Page:
    """One open page's slot: the newest event not yet written."""

    __slots__ = ("wake", "pending")

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.pending: Optional[bytes] = None


class LiveHub:
    def __init__(self, model: ReadModel):
        self.model = model
        self.pages: Set[Page] = set()
        self.closed = False
        self._previous_tick = self._newest_tick = 0  # tick times: the newest, and the one before it
        model.add_tick_listener(self.tick)

    def state(self, time_usec: int = 0) -> Dict[str, Any]:
        # the newest tick's totals only: those after the tick before it
        totals = self.model.tick_totals(self._previous_tick)
        last = {name: values[-1] for name, values in totals.items() if values}
        newest = self.model.newest_alerts(1) if self.model.alerts_enabled() else []
        return {"time_usec": time_usec or last.get("time_usec", 0), "devices": self.model.device_count(),
                "alerts": sum(self.model.alert_counts().values()), "newest_alert": newest[0].id if newest else "",
                "tick": {k: v for k, v in last.items() if k != "time_usec"},
                "attempts": self.model.connect_attempts()}

    @staticmethod
    def encode(state: Dict[str, Any]) -> bytes:
        return b"event: tick\ndata: " + json.dumps(state, separators=(",", ":")).encode() + b"\n\n"

    def tick(self, time_usec: int) -> None:
        """After a tick (the event loop's thread): the event, into every page's slot."""
        self._previous_tick, self._newest_tick = self._newest_tick, time_usec
        if not self.pages:
            return  # nobody to tell: nothing built
        event = self.encode(self.state(time_usec))
        for page in self.pages:
            page.pending = event
            page.wake.set()

    def close(self) -> None:
        """At stop: every stream ends (the pages reconnect to the next daemon)."""
        self.closed = True
        for page in self.pages:
            page.wake.set()

    async def stream(self, write, first: bytes) -> None:
        """Feed one page until it goes away or the daemon stops: `write(bytes)` is the response's
        (awaited; raises ConnectionError when the page is gone)."""
        page = Page()
        page.pending = first
        self.pages.add(page)
        try:
            await write(f"retry: {RETRY_MS}\n\n".encode())
            while not self.closed:
                if page.pending is not None:
                    event, page.pending = page.pending, None
                    await write(event)
                    continue
                page.wake.clear()
                try:
                    await asyncio.wait_for(page.wake.wait(), KEEPALIVE_SEC)
                except asyncio.TimeoutError:
                    await write(b": keep-alive\n\n")
        finally:
            self.pages.discard(page)
