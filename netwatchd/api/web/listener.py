"""The web UI on its listener (web.listen): the WebUi's aiohttp application behind the HTTP edge
every listener shares (netwatchd/api/http_edge.py: limits, the Host check against
web.allowed_hosts, the connection cap). Started and stopped by the daemon (netwatchd/daemon.py)."""
from __future__ import annotations

import json
from typing import Optional

from netwatchd.api.http_edge import HttpEdge
from netwatchd.api.web.app import WebUi
from netwatchd.api.web.guard import SECURITY_HEADERS
from netwatchd.read_model import ReadModel


def refusal(status: int, message: str):
    """What the edge answers for a request it refuses before the pages see it (a foreign Host,
    a head too long or too slow): the pages' JSON error, with the pages' headers."""
    return status, "application/json", (json.dumps({"error": message}) + "\n").encode(), tuple(SECURITY_HEADERS.items())


class WebListener:
    def __init__(self, model: ReadModel):
        self.model = model
        self.ui = WebUi(model)
        self._edge: Optional[HttpEdge] = None

    async def start(self) -> None:
        """ListenError "web.listen: cannot listen on ADDRESS: REASON" when the address is taken."""
        self._edge = HttpEdge("web", self.model.cfg.web.listen, lambda: self.model.cfg.web.allowed_hosts, refusal,
                              app=self.ui.app, max_body=None)
        await self._edge.start()

    def reconfigure(self) -> None:
        self.ui.reconfigure()

    async def stop(self) -> None:
        self.ui.close()  # the live streams end first: the edge's stop waits for answers under way
        if self._edge is not None:
            await self._edge.stop()
            self._edge = None
