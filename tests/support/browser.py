"""A real browser for the web UI's tests: headless Chromium driven by Selenium through chromedriver
(Debian's chromium, chromium-driver and python3-selenium; nothing is downloaded, and Selenium
Manager never runs: both programs are named by their path, and a missing one is reported here
before Selenium could go looking for it).

    with Browser(artifacts_dir(request.node.name)) as b:
        b.open(f"{base}/")
        b.wait_text("#status", "ready")
        assert b.console_errors() == []
        assert b.outside_requests(base) == []
        b.screenshot("home", 390, 844)      # -> <artifacts>/home-390x844.png

  artifacts_dir(test_name)         where a test's artifacts go (made): $NETWATCHD_ARTIFACTS/<test>
                                   or test-artifacts/<test> in the repository (gitignored)
  missing()                        why no Browser can start here, or None (for requires())
  Browser(artifacts_dir, timeout)  the context manager; `.driver` is Selenium's WebDriver
    .open(url)                     load a page (returns after its load event)
    .wait_css(selector, timeout)   wait for an element, return it
    .wait_text(selector, text, timeout)  wait for an element whose text holds `text`
    .wait_js(expression, timeout)  poll `return <expression>` until truthy, return its value
    .console_errors()              SEVERE console entries: errors, uncaught exceptions, CSP, failed loads
    .requests()                    every URL the pages asked for, in order, since the start
    .failed_requests()             URL -> net::ERR_... of those that failed
    .outside_requests(origin)      the requests not to `origin` (http://host:port), data:/blob: aside
    .screenshot(name, w, h)        viewport exactly w x h, PNG in artifacts_dir; returns its Path
    .processes()                   (pid, start time) of the processes it started still running
  The logs are read from the driver as they come (it hands each entry out once) and kept, so
  every call sees everything since the browser started. wait_* time out with an AssertionError
  carrying the page's text and console errors (tests.support.wait_for).

Nothing a page asks for can leave the host. Chromium is started with
- a proxy for everything that is not loopback, on a loopback port that refuses connections (a TCP
  socket bound and never listened on, held by the Browser until it is closed, so nobody else can
  take the port): an outside load fails with net::ERR_PROXY_CONNECTION_FAILED at once;
- loopback bypassing that proxy explicitly (`<-loopback>` drops Chromium's implicit bypass, then
  127.0.0.1, localhost and [::1] are named): the page under test is reached directly;
- a host resolver that answers "not found" for every name but loopback's, so that nothing which
  goes around the proxy (prefetches, a WebSocket to a name) resolves anything (the rules apply to
  IP literals too: without `EXCLUDE 127.0.0.1` and `EXCLUDE ::1` loopback's addresses fail);
- WebRTC limited to proxied UDP (its UDP would not go through an HTTP proxy), and Chromium's own
  background traffic (component updates, sync, default apps, extensions, first-run) turned off.
`failed_requests()` shows what stopped each outside load, `outside_requests()` which ones a page
tried: a test can assert both.

Running as root in a container: --no-sandbox, --disable-dev-shm-usage, --disable-gpu, and a
profile of its own (--user-data-dir, HOME and XDG_CONFIG_HOME in a fresh temporary directory,
removed at the end; Chromium's crash handler writes its database there too, not under ~/.config).

Clean-up kills only what this Browser started: chromedriver (the Service's process) and its
descendants, read from /proc (at start and again just before quitting, while the tree is whole),
plus the processes whose command line carries this Browser's own temporary directory (the crash
handlers, which detach from the tree). Each is matched by pid and start time, so a reused pid is
never touched; a zombie (dead, left for init to reap) counts as gone.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple
from urllib.parse import urlsplit

from tests.support import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
# Requests of the browser's own pages (its new-tab page, WebUI): not asked for by a page under test.
INTERNAL_SCHEMES = ("chrome", "chrome-untrusted", "chrome-extension", "chrome-search", "devtools")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def artifacts_dir(test_name: str) -> Path:
    """Where a test's artifacts (screenshots) go, made if need be: $NETWATCHD_ARTIFACTS/<test> if
    that is set, else test-artifacts/<test> in the repository's root (gitignored). The test's
    name is made a safe folder name (a pytest node's `[param]` or `/` become `_`)."""
    base = Path(os.environ["NETWATCHD_ARTIFACTS"]) if os.environ.get("NETWATCHD_ARTIFACTS") \
        else REPO / "test-artifacts"
    folder = base / (re.sub(r"[^A-Za-z0-9._-]+", "_", test_name).strip("._") or "test")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def missing() -> Optional[str]:
    """Why a Browser cannot start here (for tests.conftest.requires), or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"needs {path} (Debian's {package})"
    try:
        import selenium.webdriver  # noqa: F401
    except ImportError:
        return "needs Selenium (Debian's python3-selenium) visible to this interpreter"
    return None


def png_size(data: bytes) -> Tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError if it is no PNG."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def origin(url: str) -> str:
    """scheme://host:port of a URL, the port always written (http://a/ -> http://a:80)."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme, 0)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


# ----------------------------------------------------------------------------- processes
Proc = Tuple[int, int]  # (pid, start time in clock ticks since boot): one process, never a reused pid


def _stat(pid: int) -> Optional[Tuple[str, int, int]]:
    """(state, ppid, start time) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return rest[0], int(rest[1]), int(rest[19])


def _all_pids() -> List[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(root: int) -> Set[Proc]:
    """`root` and every process below it, from /proc."""
    children: Dict[int, List[Proc]] = {}
    found: Set[Proc] = set()
    for pid in _all_pids():
        st = _stat(pid)
        if st is None:
            continue
        children.setdefault(st[1], []).append((pid, st[2]))
        if pid == root:
            found.add((pid, st[2]))
    todo = [pid for pid, _ in found]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def carrying(token: str) -> Set[Proc]:
    """Processes whose command line names a path under the folder `token` (a Browser's own
    temporary directory)."""
    found = set()
    needle = token.rstrip("/").encode() + b"/"
    for pid in _all_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        st = _stat(pid)
        if needle in cmdline and st is not None:
            found.add((pid, st[2]))
    return found


def alive(procs: Iterable[Proc]) -> Set[Proc]:
    """Those still running: the same pid with the same start time, and not a zombie."""
    out = set()
    for pid, start in procs:
        st = _stat(pid)
        if st is not None and st[2] == start and st[0] != "Z":
            out.add((pid, start))
    return out


# ----------------------------------------------------------------------------- the browser
class Browser:
    """Headless Chromium for one test, as a context manager; see the module's docstring.
    `driver` is the Selenium WebDriver, for anything the helpers do not cover."""

    def __init__(self, artifacts_dir: Path, timeout: float = 10):
        self.artifacts_dir = Path(artifacts_dir)
        self.timeout = timeout  # the wait_* helpers' default
        self.driver: Any = None
        self._service: Any = None
        self.temp_dir: Optional[str] = None  # profile, HOME, crash database: removed by close()
        self._dead_port: Optional[socket.socket] = None
        self._procs: Set[Proc] = set()
        self._console: List[dict] = []  # the browser log, accumulated (the driver hands each entry once)
        self._network: List[dict] = []  # the performance log's Network.* events, accumulated

    # -- life
    def __enter__(self) -> "Browser":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "Browser":
        why = missing()
        if why:
            raise RuntimeError(f"cannot start a browser: {why}")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.temp_dir = tempfile.mkdtemp(prefix="netwatchd-browser-")
        self._dead_port = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._dead_port.bind(("127.0.0.1", 0))  # bound, never listening: every connect is refused
        dead = self._dead_port.getsockname()[1]

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in self.arguments(self.temp_dir, dead):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        options.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
        options.add_experimental_option("prefs", {"webrtc.ip_handling_policy": "disable_non_proxied_udp"})
        options.ignore_local_proxy_environment_variables()  # Selenium to chromedriver: straight to loopback
        env = dict(os.environ, HOME=f"{self.temp_dir}/home", XDG_CONFIG_HOME=f"{self.temp_dir}/config",
                   XDG_CACHE_HOME=f"{self.temp_dir}/cache")
        self._service = Service(executable_path=CHROMEDRIVER, env=env)
        self.driver = webdriver.Chrome(service=self._service, options=options)
        self._track()
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(30)
        return self

    @staticmethod
    def arguments(tmp: str, dead_port: int) -> List[str]:
        """Chromium's command line: headless as root in a container, and nothing leaving the host."""
        return [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp}/profile", "--no-first-run", "--no-default-browser-check",
            "--disable-component-update", "--disable-background-networking", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
            "--disable-client-side-phishing-detection", "--disable-breakpad",
            "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
            # IP literals go through these rules too: loopback's are excluded one by one (::1 unbracketed)
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE ::1",
            f"--proxy-server=127.0.0.1:{dead_port}",
            "--proxy-bypass-list=<-loopback>;127.0.0.1;localhost;[::1]",
        ]

    def _track(self) -> None:
        """Adds the processes this Browser started, as they are now, to those clean-up stops."""
        process = getattr(self._service, "process", None)
        if process is not None:
            self._procs |= descendants(process.pid)
        if self.temp_dir:
            self._procs |= carrying(self.temp_dir)

    def processes(self) -> Set[Proc]:
        """(pid, start time) of every process this Browser started that is still running."""
        if self.driver is not None:
            self._track()
        return alive(self._procs)

    def close(self) -> None:
        """Quits the driver, stops what is left of the processes it started (SIGKILL by pid), closes
        the dead proxy port and removes the temporary profile. RuntimeError if a process survives."""
        self._track()  # the whole tree, while the browser still holds it together
        try:
            if self.driver is not None:
                self.driver.quit()
            elif self._service is not None and getattr(self._service, "process", None) is not None:
                self._service.stop()
        finally:
            self.driver = None
            self._track()  # the crash handlers carry our directory; whatever was left by the quit
            left = self._stop(self._procs)
            self._service = None
            if self._dead_port is not None:
                self._dead_port.close()
                self._dead_port = None
            if self.temp_dir:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
                self.temp_dir = None
        if left:
            raise RuntimeError(f"browser processes survived SIGKILL: {sorted(left)}")

    @staticmethod
    def _stop(procs: Set[Proc]) -> Set[Proc]:
        deadline = time.monotonic() + 5
        while alive(procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid, start in alive(procs):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while alive(procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        return alive(procs)

    # -- pages
    def open(self, url: str) -> None:
        """Loads `url` (returns when its load event has fired)."""
        self.driver.get(url)

    def _detail(self) -> str:
        try:
            body = self.driver.execute_script("return document.body ? document.body.innerText : ''")
            return (f"page {self.driver.current_url}: {body[:2000]!r}\n"
                    f"console errors: {self.console_errors()}")
        except Exception as e:  # the detail of a failure must not hide it
            return f"(no detail: {e!r})"

    def wait_js(self, expression: str, timeout: Optional[float] = None, what: Optional[str] = None) -> Any:
        """Polls `return <expression>` in the page until it is truthy, and returns that value."""
        return wait_for(lambda: self.driver.execute_script("return " + expression), timeout=timeout or self.timeout,
                        what=what or f"JS `{expression}`", detail=self._detail)

    def wait_css(self, selector: str, timeout: Optional[float] = None) -> Any:
        """Waits for an element matching the CSS `selector` and returns it (a WebElement)."""
        from selenium.webdriver.common.by import By

        def found():
            elements = self.driver.find_elements(By.CSS_SELECTOR, selector)
            return elements[0] if elements else None
        return wait_for(found, timeout=timeout or self.timeout, what=f"an element `{selector}`",
                        detail=self._detail)

    def wait_text(self, selector: str, text: str, timeout: Optional[float] = None) -> Any:
        """Waits for an element matching `selector` whose text holds `text`, and returns it."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        def found():
            for element in self.driver.find_elements(By.CSS_SELECTOR, selector):
                try:
                    if text in (element.get_attribute("textContent") or ""):
                        return element
                except StaleElementReferenceException:  # replaced while we read it: look again
                    continue
            return None
        return wait_for(found, timeout=timeout or self.timeout, what=f"`{selector}` to hold {text!r}",
                        detail=self._detail)

    # -- what the pages did
    def _drain(self) -> None:
        """Moves the driver's new log entries into ours (the driver hands each entry out once)."""
        if self.driver is None:
            return
        self._console.extend(self.driver.get_log("browser"))
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method", "").startswith("Network."):
                self._network.append(message)

    def console_errors(self) -> List[str]:
        """Every SEVERE entry of the browser's console since it started: errors logged, uncaught
        exceptions and promise rejections, CSP violations, failed loads (with their URL)."""
        self._drain()
        return [e["message"] for e in self._console if e.get("level") == "SEVERE"]

    def _page_requests(self) -> List[dict]:
        self._drain()
        out = []
        for m in self._network:
            if m["method"] != "Network.requestWillBeSent":
                continue
            url, document = m["params"]["request"]["url"], m["params"].get("documentURL", "")
            if urlsplit(url).scheme in INTERNAL_SCHEMES or urlsplit(document).scheme in INTERNAL_SCHEMES:
                continue
            out.append(m["params"])
        return out

    def requests(self) -> List[str]:
        """Every URL the pages asked for since the browser started, in order (a redirect's next
        hop is a request of its own); not the browser's own pages (chrome://)."""
        return [p["request"]["url"] for p in self._page_requests()]

    def failed_requests(self) -> Dict[str, str]:
        """URL -> Chromium's error (net::ERR_...; for one the page's CSP blocked, the reason,
        `csp`) for each request that failed."""
        urls = {p["requestId"]: p["request"]["url"] for p in self._page_requests()}
        failed = [m["params"] for m in self._network if m["method"] == "Network.loadingFailed"]
        return {urls[p["requestId"]]: p.get("errorText") or p.get("blockedReason", "")
                for p in failed if p["requestId"] in urls}

    def outside_requests(self, allowed_origin: str) -> List[str]:
        """The requests whose origin is not `allowed_origin` (http://host:port), data: and blob:
        aside."""
        allowed = origin(allowed_origin)
        return [url for url in self.requests()
                if urlsplit(url).scheme not in ("data", "blob") and origin(url) != allowed]

    def screenshot(self, name: str, width: int, height: int) -> Path:
        """Sets the viewport to exactly width x height CSS pixels at scale 1 (a phone's, mobile,
        under 600 wide), waits for a frame drawn at that size, and writes
        <artifacts_dir>/<name>-<width>x<height>.png. Returns its path."""
        self.driver.set_window_size(width, height)
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        self.driver.execute_async_script(
            "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done()));")
        data = self.driver.get_screenshot_as_png()
        if png_size(data) != (width, height):
            raise AssertionError(f"screenshot is {png_size(data)}, not {(width, height)}")
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        path = self.artifacts_dir / f"{name}-{width}x{height}.png"
        path.write_bytes(data)
        return path
