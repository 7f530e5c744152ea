"""The browser harness (tests/support/browser.py) on pages of its own, served by a thread on
127.0.0.1: the text a script writes is waited for; console errors, the requests a page made and
those that went outside its origin are reported; screenshots have the asked pixel size; and what
a page asks of the outside never leaves the host -- the dead proxy fails such loads at once and the
page sees its fetch rejected -- while loopback (127.0.0.1, localhost, ::1) is reached directly.

Needs Debian's chromium, chromium-driver and python3-selenium (not root): under CI=true their
absence fails the tests (tests.conftest.requires), elsewhere it skips them.
"""
from __future__ import annotations

import contextlib
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.conftest import requires
from tests.support import wait_for
from tests.support import browser as harness
from tests.support.browser import Browser, artifacts_dir

GREETING = "hello from data.json"
HEAD = '<meta charset="utf-8"><meta name="viewport" content="width=device-width"><link rel="icon" href="data:,">'
CLEAN = f"""<!doctype html><html><head>{HEAD}<title>clean</title></head><body>
<h1>netwatchd</h1><p id="greeting">waiting</p><script src="/app.js"></script></body></html>"""
# example.com is loaded by the parser (blocking: it has failed before the scripts below run)
OUTSIDE = f"""<!doctype html><html><head>{HEAD}<title>outside</title>
<script src="http://example.com/x.js"></script></head><body>
<p id="greeting">waiting</p><p id="outside">waiting</p>
<script src="/app.js"></script><script src="/outside.js"></script></body></html>"""
APP_JS = """fetch("/data.json").then(r => r.json()).then(d => {
  document.getElementById("greeting").textContent = d.greeting; });"""
OUTSIDE_JS = """fetch("http://10.255.255.1/").then(
  r => { document.getElementById("outside").textContent = "outside fetch answered " + r.status; },
  e => { document.getElementById("outside").textContent = "outside fetch rejected: " + e; });"""
PAGES = {
    "/": ("text/html", CLEAN),
    "/outside.html": ("text/html", OUTSIDE),
    "/app.js": ("text/javascript", APP_JS),
    "/outside.js": ("text/javascript", OUTSIDE_JS),
    "/data.json": ("application/json", '{"greeting": "%s"}' % GREETING),
}
OUTSIDE_URLS = ["http://10.255.255.1/", "http://example.com/x.js"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.served.append(self.path)
        kind, body = PAGES.get(self.path, ("text/plain", None))
        data = (body if body is not None else "not here").encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", kind + "; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # the served list is the log
        pass


class Site(ThreadingHTTPServer):
    """The pages above on `host`, a free port; `served` lists each path asked for, in order."""

    def __init__(self, host: str):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), Handler)
        self.served: List[str] = []
        self.base = f"http://{'[%s]' % host if ':' in host else host}:{self.server_address[1]}"


@contextlib.contextmanager
def serving(host: str = "127.0.0.1") -> Iterator[Site]:
    """A Site served by a thread, stopped and closed (its thread joined) even when the test fails."""
    site = Site(host)
    thread = threading.Thread(target=site.serve_forever, name=f"site-{site.base}", daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.shutdown()
        site.server_close()
        thread.join(10)


def require_browser() -> None:
    requires(harness.missing() is None, harness.missing() or "")


@pytest.fixture
def site() -> Iterator[Site]:
    with serving() as s:
        yield s


@pytest.fixture
def browser(request, site) -> Iterator[Browser]:
    require_browser()
    with Browser(artifacts_dir(request.node.name)) as b:
        yield b


def png_pixels(path: Path) -> tuple:
    """(width, height) read from the file's own PNG header: the signature, then IHDR."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is no PNG"
    return struct.unpack(">II", data[16:24])


def test_a_clean_page(site, browser):
    browser.open(f"{site.base}/")
    browser.wait_text("#greeting", GREETING)

    assert browser.requests() == [f"{site.base}/", f"{site.base}/app.js", f"{site.base}/data.json"]
    assert site.served == ["/", "/app.js", "/data.json"]
    assert browser.outside_requests(site.base) == []
    assert browser.console_errors() == []
    assert browser.failed_requests() == {}

    for width, height in ((1280, 800), (390, 844)):
        path = browser.screenshot("clean", width, height)
        assert path == browser.artifacts_dir / f"clean-{width}x{height}.png"
        assert png_pixels(path) == (width, height)
        assert browser.driver.execute_script("return [innerWidth, innerHeight]") == [width, height]


def test_outside_loads_fail_inside_the_host(site, browser):
    """example.com (a name) and 10.255.255.1 (an address that would not answer) both go to the dead
    proxy on loopback and fail there at once: net::ERR_PROXY_CONNECTION_FAILED, the page's fetch
    rejected -- not a DNS answer, not a timeout on the wire."""
    browser.open(f"{site.base}/outside.html")
    browser.wait_text("#greeting", GREETING)  # the page's own work is not stopped by the failures
    browser.wait_text("#outside", "outside fetch rejected: TypeError: Failed to fetch")

    failed = wait_for(lambda: all(url in browser.failed_requests() for url in OUTSIDE_URLS)
                      and browser.failed_requests(), what="both outside loads to fail")
    assert failed == {url: "net::ERR_PROXY_CONNECTION_FAILED" for url in OUTSIDE_URLS}
    assert sorted(browser.outside_requests(site.base)) == OUTSIDE_URLS
    assert sorted(browser.requests()) == sorted(
        [f"{site.base}/outside.html", f"{site.base}/app.js", f"{site.base}/data.json",
         f"{site.base}/outside.js"] + OUTSIDE_URLS)
    assert sorted(site.served) == ["/app.js", "/data.json", "/outside.html", "/outside.js"]

    errors = wait_for(lambda: all(any(url in e for e in browser.console_errors()) for url in OUTSIDE_URLS)
                      and browser.console_errors(), what="console errors naming both outside loads")
    assert len(errors) == 2, errors
    for url in OUTSIDE_URLS:
        assert any(url in e and "ERR_PROXY_CONNECTION_FAILED" in e for e in errors), (url, errors)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def running(pid: int, start: int) -> bool:
    """The process is there, the same one (its start time, /proc's field 22), and no zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]) == start and fields[0] != "Z"


def test_loopback_goes_direct_and_nothing_is_left(request, site):
    """localhost and ::1 (when this host has it) reach their servers directly, past the dead proxy
    and the resolver that finds no other name; after the Browser closes, no process it started
    runs and its temporary directory is gone."""
    require_browser()
    with contextlib.ExitStack() as stack:
        sites = [site] + ([stack.enter_context(serving("::1"))] if ipv6_loopback() else [])
        b = stack.enter_context(Browser(artifacts_dir(request.node.name)))
        for base in [f"http://localhost:{site.server_address[1]}"] + [s.base for s in sites]:
            b.open(f"{base}/")
            b.wait_text("#greeting", GREETING)
        assert b.console_errors() == []
        assert all(s.served.count("/data.json") == (2 if s is site else 1) for s in sites), \
            [s.served for s in sites]
        procs, temp_dir = b.processes(), b.temp_dir
        comms = {Path(f"/proc/{pid}/comm").read_text().strip() for pid, _ in procs}
        assert {"chromedriver", "chromium"} <= comms, comms
    assert [p for p in procs if running(*p)] == []
    assert not Path(temp_dir).exists()
