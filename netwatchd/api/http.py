"""The HTTP listeners (both off by default): metrics with our JSON API, and ebpf-server's API.

The metrics listener (metrics.*):
    GET /metrics                                         Prometheus text format
    GET /health                                          {"status": "ok"}
    GET /netwatchd/api/connection-summary?pid=N|command=NAME&duration=SEC
    GET /netwatchd/api/list-connections?pid=N&limit=M
Our JSON routes answer the fields of D-Bus Summary / ListConnections; arguments are checked behind
the read model (netwatchd/read_model.py, the connect engine's queries), so a bad request gets the
same message here (400) as on D-Bus (InvalidArgs).
They live under /netwatchd/ so they can never be mistaken for ebpf-server's routes of the same
name, which differ (POST, limit per process): those are served by netwatchd.api.ebpf_server on a
listener of their own (ebpf_server_api.*).

Both are served by the HTTP edge (netwatchd.api.http_edge, on aiohttp): keep-alive when the
client asks for it (`Connection: keep-alive`), else one request per connection; a request head
of at most 8 KiB and a body (ebpf-server's listener only: one Content-Length or chunked, at most
8 KiB, as ebpf-server's Go server takes it) received within 10 s; HEAD answers headers only.
Against a hostile LAN (netwatchd.api.http_guard): a Host naming anything but an IP address,
localhost or a name in the listener's allowed_hosts is refused (403, DNS rebinding); at most
MAX_CONNECTIONS live connections per listener, the oldest still sending its request closed to
admit a new one (netwatchd_http_connections_dropped_total); numbers are bounded before int().
"""
from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Dict, List, Optional, Tuple

from netwatchd.api import metrics
from netwatchd.api.http_edge import (LISTEN_BACKLOG, MAX_BODY_BYTES, MAX_HEAD_BYTES, READ_TIMEOUT_SEC, REASONS, RUNNING,
                                     HttpEdge, ListenError)
from netwatchd.api.http_guard import MAX_CONNECTIONS, BadRequest, decimal, parse_head
from netwatchd.errors import InvalidQuery
from netwatchd.read_model import ConnectQueries, ReadModel

# What callers have always imported from here: the limits, the running caps, the errors.
__all__ = ["HttpApi", "ebpf_server_listener", "ListenError", "BadRequest", "RUNNING", "REASONS", "parse_head",
           "connection_summary", "list_connections", "MAX_HEAD_BYTES", "MAX_BODY_BYTES", "READ_TIMEOUT_SEC",
           "LISTEN_BACKLOG", "MAX_CONNECTIONS", "OUR_PREFIX"]

log = logging.getLogger(__name__)

DEFAULT_DURATION_SEC = 60
UINT32_MAX = 2**32 - 1
OUR_PREFIX = "/netwatchd/api"


# -- our JSON routes (pure) ----------------------------------------------------------------------

def _one(query: Dict[str, List[str]], *names: str) -> Optional[str]:
    values = [v for name in names for v in query.get(name, [])]
    if len(values) > 1:
        raise InvalidQuery(f"give {names[0]} at most once")
    return values[0] if values else None


def _uint(query: Dict[str, List[str]], name: str, default: int, *aliases: str) -> int:
    value = _one(query, name, *aliases)
    if value is None or value == "":
        return default
    number = decimal(value)  # bounded: a 5000-digit value is too large, not a failed int()
    if number is None or number > UINT32_MAX:
        raise InvalidQuery(f"{name} must be an integer 0..{UINT32_MAX}, got {value!r}")
    return int(number)


def _rfc3339(usec: int) -> str:
    return datetime.datetime.fromtimestamp(usec / 1e6, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def connection_summary(connects: ConnectQueries, query: Dict[str, List[str]]) -> Dict[str, Any]:
    pid = _uint(query, "pid", 0)
    command = _one(query, "command") or ""
    duration = _uint(query, "duration", DEFAULT_DURATION_SEC, "duration_seconds")
    answer = dict(connects.summary(pid, command, duration))
    answer["duration"] = duration
    answer["query_time"] = _now()
    return answer


def list_connections(connects: ConnectQueries, query: Dict[str, List[str]]) -> Dict[str, Any]:
    pid = _uint(query, "pid", 0)
    limit = _uint(query, "limit", 0)
    records, truncated = connects.list_connections(pid, limit)
    by_pid: Dict[str, List[Dict[str, Any]]] = {}
    for record in records:  # newest first within each pid, as ListConnections
        record = dict(record, timestamp=_rfc3339(record["timestamp_usec"]), protocol=record["transport"].upper())
        by_pid.setdefault(str(record["pid"]), []).append(record)
    return {"total_pids": len(by_pid), "connections": by_pid, "truncated": truncated, "query_time": _now()}


# -- the server ----------------------------------------------------------------------------------

class HttpApi:
    """One listener over a ReadModel. `route(method, path, query, body)` and `error(status,
    message)` answer (status, content type, body[, headers]); by default the metrics listener's
    routes. The HTTP edge (netwatchd.api.http_edge) serves it on `cfg.listen`; `reads_body`: the
    routes take a request body (at most MAX_BODY_BYTES), else a body is left unread."""

    def __init__(self, model: ReadModel, cfg, setting: str = "metrics", route=None, error=None,
                 reads_body: bool = False):
        self.model = model
        self.cfg = cfg  # any section with `listen`
        self.setting = setting
        self.route = route or (lambda method, path, query, body: self.respond(method, path, query))
        self.error = error or _error
        self.reads_body = reads_body
        # a body with a Content-Length or chunked, as ebpf-server's Go server takes it
        self.edge = HttpEdge(setting, cfg.listen, self.allowed_hosts, self.error, route=self.route,
                             max_body=MAX_BODY_BYTES if reads_body else None, chunked=reads_body)
        self.connections = self.edge.connections

    async def start(self) -> None:
        await self.edge.start()

    async def stop(self) -> None:
        await self.edge.stop()

    def allowed_hosts(self) -> Tuple[str, ...]:
        """The listener's allowed_hosts as the running config has them (a reload changes them)."""
        return getattr(self.model.cfg, self.setting).allowed_hosts

    def respond(self, method: str, path: str, query: Dict[str, List[str]]) -> Tuple[int, str, bytes]:
        routes = {
            "/metrics": self._metrics,
            "/health": lambda q: _json(200, {"status": "ok"}),
            OUR_PREFIX + "/connection-summary": lambda q: _json(200, connection_summary(self.model, q)),
            OUR_PREFIX + "/list-connections": lambda q: _json(200, list_connections(self.model, q)),
        }
        handler = routes.get(path)
        if handler is None:
            return _error(404, f"no such path {path!r}; try /metrics, /health, {OUR_PREFIX}/connection-summary, "
                               f"{OUR_PREFIX}/list-connections (ebpf-server's API is on ebpf_server_api.listen)")
        if method != "GET":
            return _error(405, f"method {method} not allowed: this API is read-only (GET)")
        try:
            self.model.refresh()  # answers exact up to this request
            return handler(query)
        except InvalidQuery as e:
            return _error(400, str(e))
        except Exception:
            log.exception("HTTP %s %s failed", method, path)
            return _error(500, "internal error; see the daemon's log")

    def _metrics(self, _query) -> Tuple[int, str, bytes]:
        snap = metrics.snapshot(self.model)
        snap.http_connections_dropped = {setting: cap.dropped for setting, cap in RUNNING.items()}
        text = metrics.render(snap, self.model.cfg.metrics.top_commands)
        return 200, metrics.CONTENT_TYPE, text.encode()


def _json(status: int, answer: Dict[str, Any]) -> Tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(answer) + "\n").encode()


def _error(status: int, message: str) -> Tuple[int, str, bytes]:
    return _json(status, {"error": message})


def ebpf_server_listener(model: ReadModel) -> HttpApi:
    """ebpf-server's API (netwatchd.api.ebpf_server) on its own listener, ebpf_server_api.*."""
    from netwatchd.api import ebpf_server

    def route(method, path, query, body):
        if path.startswith("/api/"):  # exact up to this request
            model.refresh()
        return ebpf_server.handle(model, method, path, query, body, model.version())

    return HttpApi(model, model.cfg.ebpf_server_api, "ebpf_server_api", route=route,
                   error=ebpf_server.error_response, reads_body=True)

