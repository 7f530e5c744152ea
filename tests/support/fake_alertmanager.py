"""A fake Alertmanager for the fleet's unit tests: an HTTP server on 127.0.0.1 in a thread that
records every request and, like Alertmanager's API v2, keeps the newest post of each label set
(what GET /api/v2/alerts answers). Tests set `status`, `answer` and `delay` to make it fail."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, NamedTuple, Optional

from tests.support.alertmanager import free_port


class Request(NamedTuple):
    method: str
    path: str  # as the request line sent it (the handler's own path collapses a leading "//")
    headers: Dict[str, str]  # names lower-case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def label_key(labels: Dict[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


class _Handler(BaseHTTPRequestHandler):
    server: "FakeAlertmanager"

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fake = self.server
        target = self.requestline.split()[1]
        request = Request(self.command, target, {k.lower(): v for k, v in self.headers.items()}, body)
        with fake.lock:
            fake.requests.append(request)
            status, answer, delay = fake.status, fake.answer, fake.delay
            if self.command == "POST" and status == 200:
                for alert in json.loads(body):
                    fake.alerts[label_key(alert["labels"])] = alert
            if answer is None:
                answer = json.dumps(list(fake.alerts.values())).encode() if self.command == "GET" else b""
        if delay:
            time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Type", fake.content_type)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except OSError:  # the client gave up (a timeout test)
            pass

    do_GET = do_POST = _serve

    def log_message(self, *args):
        pass


class FakeAlertmanager(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.lock = threading.Lock()
        self.requests: List[Request] = []
        self.alerts: Dict[tuple, Dict[str, Any]] = {}
        self.status = 200
        self.answer: Optional[bytes] = None  # None: Alertmanager's own (the alerts held, on GET)
        self.content_type = "application/json"
        self.delay = 0.0
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-alertmanager", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle_error(self, request, client_address):
        pass

    def posts(self) -> List[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST"]

    def posted_alerts(self) -> List[Dict[str, Any]]:
        """Every alert of every POST, in order."""
        return [a for r in self.posts() for a in r.json()]

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (just freed)."""
    return free_port()
