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

A deliberately small HTTP/1.1 server: one request per connection, request head at most 8 KiB,
a body (ebpf-server's listener only; one Content-Length, at most 8 KiB) too, all read within 10 s.
Against a hostile LAN (netwatchd.api.http_guard): a Host naming anything but an IP address,
localhost or a name in the listener's allowed_hosts is refused (403, DNS rebinding); at most
MAX_CONNECTIONS live connections per listener, the oldest still sending its request closed to
admit a new one (netwatchd_http_connections_dropped_total); numbers are bounded before int().
"""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from netwatchd.api import metrics
from netwatchd.api.http_guard import (MAX_CONNECTIONS, BadRequest, ConnectionCap, check_host, content_length, decimal,
                                      parse_headers)
from netwatchd.config import split_listen
from netwatchd.errors import InvalidQuery
from netwatchd.read_model import ConnectQueries, ReadModel

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
MAX_BODY_BYTES = 8192
READ_TIMEOUT_SEC = 10.0
# The kernel's accept queue, and how many connections asyncio accepts per loop turn. Small, so
# that under a connection flood a new connection is admitted (http_guard.ConnectionCap) within a
# turn or two of its accept, and MAX_CONNECTIONS / LISTEN_BACKLOG (8) turns pass before it is the
# oldest still sending: an honest request's head is read in 3-4. (Measured with a client that
# reopens each closed connection at once, 3000-8000/s here: with asyncio's default of 100 and a
# cap of 128, GET /health was closed unanswered 3 times in 10; with 32, 0 in 40 (caps 128 and
# 256), the daemon's descriptors peaking at ~400 with 256.)
LISTEN_BACKLOG = 32
DEFAULT_DURATION_SEC = 60
UINT32_MAX = 2**32 - 1
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 411: "Length Required", 413: "Request Entity Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 505: "HTTP Version Not Supported"}
OUR_PREFIX = "/netwatchd/api"
# The cap of each running listener, by its setting (metrics, ebpf_server_api): /metrics exports
# every one's dropped count. A listener started again (in tests) replaces its entry.
RUNNING: Dict[str, ConnectionCap] = {}


class ListenError(Exception):
    """The configured address cannot be listened on; the message names it."""


# -- parsing (pure) ----------------------------------------------------------------------------

def parse_head(head: bytes) -> Tuple[str, str, Dict[str, List[str]]]:
    """(method, path, query) of a request head (request line + headers, CRLF CRLF included)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505, f"unsupported protocol {version!r}")
    for line in lines[1:]:
        if line and ":" not in line:
            raise BadRequest(400, "malformed header line")
    if not target.startswith("/"):
        raise BadRequest(400, "request target must be a path")
    url = urlsplit(target)
    try:
        query = parse_qs(url.query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(400, "query string is not UTF-8") from None
    return method, url.path, query


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
    routes."""

    def __init__(self, model: ReadModel, cfg, setting: str = "metrics", route=None, error=None,
                 reads_body: bool = False):
        self.model = model
        self.cfg = cfg  # any section with `listen`
        self.setting = setting
        self.route = route or (lambda method, path, query, body: self.respond(method, path, query))
        self.error = error or _error
        self.reads_body = reads_body
        self.connections = ConnectionCap(MAX_CONNECTIONS)
        self.server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        host, port = split_listen(self.cfg.listen)
        try:
            self.server = await asyncio.start_server(self._connected, host, port, reuse_address=True,
                                                     backlog=LISTEN_BACKLOG, limit=MAX_HEAD_BYTES)
        except OSError as e:
            raise ListenError(f"{self.setting}.listen: cannot listen on {self.cfg.listen}: {os.strerror(e.errno) if e.errno else e}") from None
        RUNNING[self.setting] = self.connections
        log.info("HTTP %s on http://%s/", self.setting, self.cfg.listen)

    async def stop(self) -> None:
        if RUNNING.get(self.setting) is self.connections:
            del RUNNING[self.setting]
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def allowed_hosts(self) -> Tuple[str, ...]:
        """The listener's allowed_hosts as the running config has them (a reload changes them)."""
        return getattr(self.model.cfg, self.setting).allowed_hosts

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        """A new connection, admitted as its transport is made (at the cap, another is closed), not
        one loop turn later in its task: accepted sockets wait for admission for less long."""
        return self._serve(reader, writer, self.connections.admit(writer.transport.abort))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: int) -> None:
        method = ""
        try:
            deadline = asyncio.get_running_loop().time() + READ_TIMEOUT_SEC
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SEC)
                if len(head) > MAX_HEAD_BYTES:
                    raise BadRequest(431, f"request head over {MAX_HEAD_BYTES} bytes")
                method, path, query = parse_head(head)
                fields = parse_headers(head)
                check_host(fields, self.allowed_hosts(), f"{self.setting}.allowed_hosts")
                body = await self._read_body(reader, writer, fields, deadline) if self.reads_body else b""
                answer = self.route(method, path, query, body)
            except asyncio.LimitOverrunError:
                answer = self.error(431, f"request head over {MAX_HEAD_BYTES} bytes")
            except asyncio.TimeoutError:
                answer = self.error(408, f"request not received within {READ_TIMEOUT_SEC:g} s")
            except asyncio.IncompleteReadError:
                return  # the client went away
            except BadRequest as e:
                answer = self.error(e.status, str(e))
            except Exception:
                log.exception("HTTP %s request failed", self.setting)
                answer = self.error(500, "internal error; see the daemon's log")
            self.connections.received(key)  # an error answer too: the request is over
            status, ctype, body, *headers = answer
            writer.write(_response(status, ctype, body, headers[0] if headers else None, head_only=method == "HEAD"))
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT_SEC)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self.connections.release(key)
            writer.close()

    async def _read_body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         fields: Dict[str, List[str]], deadline: float) -> bytes:
        length = content_length(fields, MAX_BODY_BYTES)
        if not length:
            return b""
        if any(value.lower() == "100-continue" for value in fields.get("expect", ())):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        return await asyncio.wait_for(reader.readexactly(length), remaining)

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


def _response(status: int, ctype: str, body: bytes, headers=None, head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    if headers is None and status == 405:
        headers = (("Allow", "GET"),)
    for name, value in headers or ():
        head += f"{name}: {value}\r\n"
    return (head + "\r\n").encode() + (b"" if head_only else body)
