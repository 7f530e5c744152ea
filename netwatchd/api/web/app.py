"""The web UI (web.*): read-only pages over the read model, live through server-sent events.

    GET /                    overview: devices, alerts by kind, connects per tick, what was lost
    GET /devices             the inventory: sortable, filterable, paged
    GET /devices/<mac>       one device: addresses, names, peers, its rates against their band
    GET /alerts              the alert log: filtered by kind and subject, paged
    GET /alerts/<id>         one alert: its details and the series around it (why it fired)
    GET /processes           the top commands: outcomes and handshake latency
    GET /api/...             each view's data as JSON (netwatchd/api/web/views.py)
    GET /api/events          the live feed (netwatchd/api/web/live.py)
    GET /static/...          the page's own script and style, and Chart.js from Debian's
                             libjs-chart.js (/usr/share/javascript/chart.js)

Every view is a URL the server answers (a bookmark, a reload, a link in an alert all work): the
server sends one HTML shell naming the view, and static/app.js draws it from /api/. Nothing is
loaded from another host; the Content-Security-Policy says so to the browser too
(netwatchd/api/web/guard.py). Only GET and HEAD: nothing here changes anything.
"""
from __future__ import annotations

import hashlib
import html
import logging
import string
from pathlib import Path
from typing import Awaitable, Callable, Dict, Optional

from aiohttp import web

from netwatchd.api.web import views
from netwatchd.api.web.guard import REALM, SECURITY_HEADERS, Credentials
from netwatchd.api.web.live import MAX_PAGES, LiveHub
from netwatchd.errors import InvalidQuery, NoSuchDevice
from netwatchd.read_model import ReadModel

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CHART_JS = Path("/usr/share/javascript/chart.js/chart.min.js")  # Debian's libjs-chart.js
OWN_FILES = {"app.js": "text/javascript", "dom.js": "text/javascript", "charts.js": "text/javascript",
             "views.js": "text/javascript", "app.css": "text/css"}
# Chart.js is two thirds of a page's first load (~66 KiB gzipped): only the pages that draw get it
CHART_VIEWS = ("overview", "device", "alerts", "alert")
SCRIPTS = ('<script type="module" src="/static/app.js"></script>',)
CHART_SCRIPT = '<script src="/static/vendor/chart.min.js" defer></script>'
PAGES = {"overview": "Overview", "devices": "Devices", "device": "Device", "alerts": "Alerts", "alert": "Alert",
         "processes": "Processes", "notfound": "Not found"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StaticFile:
    """A file served from memory with a strong ETag (a reload of the page asks, gets 304)."""

    def __init__(self, body: bytes, content_type: str):
        self.body = body
        self.content_type = content_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    def respond(self, request: web.Request) -> web.Response:
        headers = {"ETag": self.etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304, headers=headers)
        response = web.Response(body=self.body, content_type=self.content_type, headers=headers)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response


def load_static(chart_js: Path = CHART_JS) -> Dict[str, StaticFile]:
    files = {name: StaticFile((STATIC / name).read_bytes(), ctype) for name, ctype in OWN_FILES.items()}
    try:
        files["vendor/chart.min.js"] = StaticFile(chart_js.read_bytes(), "text/javascript")
    except OSError as e:
        # the pages work without it (tables, figures); the charts say what is missing
        log.warning("web: no Chart.js at %s (%s): the pages draw no charts; install libjs-chart.js",
                    chart_js, e.strerror)
        files["vendor/chart.min.js"] = StaticFile(b"/* libjs-chart.js is not installed */\n", "text/javascript")
    return files


class WebUi:
    """The web UI's aiohttp application over a ReadModel; `app` is what a listener serves."""

    def __init__(self, model: ReadModel, chart_js: Path = CHART_JS):
        self.model = model
        self.hub = LiveHub(model)
        self.static = load_static(chart_js)
        self.shell = string.Template((STATIC / "page.html").read_text())
        self.credentials = Credentials.load(model.cfg.web)
        self.alerts_by_device = views.AlertsByDevice()
        self.app = web.Application(middlewares=[self._guard])
        get = self.app.router.add_get  # also answers HEAD
        for path, view in (("/", "overview"), ("/devices", "devices"), ("/alerts", "alerts"),
                           ("/processes", "processes")):
            get(path, self._page(view))
        get("/devices/{mac}", self._device_page)
        get("/alerts/{id}", self._alert_page)
        get("/api/overview", self._json(lambda r: views.overview(self.model)))
        get("/api/devices", self._json(lambda r: views.devices(self.model, r.query)))
        get("/api/devices/{mac}", self._json(lambda r: views.device(self.model, r.match_info["mac"],
                                                                    self.alerts_by_device)))
        get("/api/alerts", self._json(lambda r: views.alerts(self.model, r.query)))
        get("/api/alerts/{id}", self._json(lambda r: views.alert(self.model, r.match_info["id"])))
        get("/api/processes", self._json(self._processes))
        get("/api/events", self._events)
        get("/static/{name:.+}", self._static)

    def reconfigure(self) -> None:
        """After a reload: the auth files again (the config was checked, so they read)."""
        try:
            self.credentials = Credentials.load(self.model.cfg.web)
        except (OSError, ValueError) as e:
            log.error("web: keeping the credentials read before: %s", e)

    def close(self) -> None:
        self.hub.close()

    # -- what every request goes through -----------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Behind the edge's checks (the Host header among them: netwatchd/api/http_edge.py)."""
        if request.method not in ("GET", "HEAD"):
            response = self._error(request, 405, f"method {request.method} not allowed: the web UI is read-only")
            response.headers["Allow"] = "GET, HEAD"
            return response
        if not self.credentials.allows(request.headers):
            response = self._error(request, 401, "this page needs the user and password of web.basic_auth_file "
                                                 "or the token of web.token_file")
            if self.credentials.users:
                response.headers["WWW-Authenticate"] = REALM
            return response
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = self._error(request, 404, f"no page {request.path[:200]!r} here")
        except web.HTTPFound as e:
            response = web.Response(status=302, headers={"Location": e.location})
        response.headers.update(SECURITY_HEADERS)
        return response

    def _error(self, request: web.Request, status: int, message: str) -> web.Response:
        """An API path gets {"error": ...}; a page gets the shell with the message, readable
        without its script."""
        if request.path.startswith("/api/"):
            response = web.json_response({"error": message}, status=status)
        else:
            body = f'<section class="error"><h1>{status}</h1><p id="error">{html.escape(message)}</p></section>'
            response = web.Response(status=status, text=self._shell("notfound", "", body), content_type="text/html")
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- pages ----------------------------------------------------------------------------------------
    def _shell(self, view: str, key: str, body: str = "") -> str:
        title = PAGES[view] + (f" {key}" if key else "")
        scripts = ((CHART_SCRIPT,) if view in CHART_VIEWS else ()) + SCRIPTS
        return self.shell.substitute(title=html.escape(title), view=view, key=html.escape(key, quote=True),
                                     scripts="\n".join(scripts), body=body or '<p class="loading">Loading…</p>')

    def _html(self, view: str, key: str = "") -> web.Response:
        return web.Response(text=self._shell(view, key), content_type="text/html", headers={"Cache-Control": "no-store"})

    def _page(self, view: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return self._html(view)
        return handler

    async def _device_page(self, request: web.Request) -> web.Response:
        """A device by its MAC in any spelling, or by an address it used: the page's URL is its
        MAC as the inventory writes it (others are redirected there, so bookmarks agree)."""
        asked = request.match_info["mac"]
        try:
            mac = self.model.device(asked)["mac"]
        except (NoSuchDevice, InvalidQuery) as e:
            return self._error(request, 404, str(e))
        if asked != mac:
            raise web.HTTPFound(f"/devices/{mac}")
        return self._html("device", mac)

    async def _alert_page(self, request: web.Request) -> web.Response:
        alert_id = request.match_info["id"]
        try:
            views.find_alert(self.model, alert_id)  # the page's data (and its series) come from /api/
        except views.NotFound as e:
            return self._error(request, 404, str(e))
        return self._html("alert", alert_id)

    # -- data -----------------------------------------------------------------------------------------
    def _json(self, answer: Callable[[web.Request], dict]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            try:
                body = answer(request)
            except views.WebQueryError as e:
                return self._error(request, 400, str(e))
            except views.NotFound as e:
                return self._error(request, 404, str(e))
            response = web.json_response(body, headers={"Cache-Control": "no-store"})
            if len(response.body) > 1024 and "gzip" in request.headers.get("Accept-Encoding", ""):
                response.enable_compression(web.ContentCoding.gzip)
            return response
        return handler

    def _processes(self, request: web.Request) -> dict:
        self.model.refresh()  # the connect counters, exact up to this request
        return views.processes(self.model, request.query)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if len(self.hub.pages) >= MAX_PAGES:
            return self._error(request, 503, f"{MAX_PAGES} pages are open already; close one")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no", **SECURITY_HEADERS})
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            await self.hub.stream(response.write, self.hub.encode(self.hub.state()))
        except (ConnectionError, RuntimeError):  # the page went away (aiohttp: RuntimeError when closing)
            pass
        return response

    async def _static(self, request: web.Request) -> web.Response:
        found: Optional[StaticFile] = self.static.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return found.respond(request)

