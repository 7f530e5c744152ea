"""The HTTP listener (off by default): Prometheus metrics and a read-only JSON API.

    GET /metrics                                         Prometheus text format
    GET /health                                          {"status": "ok"}
    GET /api/connection-summary?pid=N|command=NAME&duration=SEC
    GET /api/list-connections?pid=N&limit=M

The JSON routes take and answer the fields of ebpf-server's API (pid or command, duration;
total_attempts, message; total_pids, connections by pid, truncated) so scripts written against it
keep working, plus this daemon's own fields. Arguments are checked by netwatchd.queries, so a bad
request gets the same message here (400) as on D-Bus (InvalidArgs).

A deliberately small HTTP/1.1 server: one request per connection, GET only, request head at most
8 KiB, read within 10 s; no body is ever read.
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
from netwatchd.config import MetricsConfig, split_listen
from netwatchd.connects.queries import InvalidQuery

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
READ_TIMEOUT_SEC = 10.0
DEFAULT_DURATION_SEC = 60
UINT32_MAX = 2**32 - 1
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Request Header Fields Too Large", 500: "Internal Server Error",
           505: "HTTP Version Not Supported"}


class ListenError(Exception):
    """The configured address cannot be listened on; the message names it."""


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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
    if not value.isdigit() or int(value) > UINT32_MAX:
        raise InvalidQuery(f"{name} must be an integer 0..{UINT32_MAX}, got {value!r}")
    return int(value)


def _rfc3339(usec: int) -> str:
    return datetime.datetime.fromtimestamp(usec / 1e6, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def connection_summary(connects, query: Dict[str, List[str]]) -> Dict[str, Any]:
    pid = _uint(query, "pid", 0)
    command = _one(query, "command") or ""
    duration = _uint(query, "duration", DEFAULT_DURATION_SEC, "duration_seconds")
    answer = dict(connects.summary(pid, command, duration))
    answer["duration"] = duration
    answer["query_time"] = _now()
    return answer


def list_connections(connects, query: Dict[str, List[str]]) -> Dict[str, Any]:
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
    def __init__(self, daemon, cfg: MetricsConfig):
        self.daemon = daemon
        self.cfg = cfg
        self.server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        host, port = split_listen(self.cfg.listen)
        try:
            self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True,
                                                     limit=MAX_HEAD_BYTES)
        except OSError as e:
            raise ListenError(f"metrics.listen: cannot listen on {self.cfg.listen}: {os.strerror(e.errno) if e.errno else e}") from None
        log.info("HTTP metrics and API on http://%s/", self.cfg.listen)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SEC)
                if len(head) > MAX_HEAD_BYTES:
                    raise BadRequest(413, f"request head over {MAX_HEAD_BYTES} bytes")
                status, ctype, body = self.respond(*parse_head(head))
            except asyncio.LimitOverrunError:
                status, ctype, body = _error(413, f"request head over {MAX_HEAD_BYTES} bytes")
            except asyncio.TimeoutError:
                status, ctype, body = _error(408, f"request head not received within {READ_TIMEOUT_SEC:g} s")
            except asyncio.IncompleteReadError:
                return  # the client went away
            except BadRequest as e:
                status, ctype, body = _error(e.status, str(e))
            writer.write(_response(status, ctype, body))
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT_SEC)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    def respond(self, method: str, path: str, query: Dict[str, List[str]]) -> Tuple[int, str, bytes]:
        routes = {
            "/metrics": self._metrics,
            "/health": lambda q: _json(200, {"status": "ok"}),
            "/api/connection-summary": lambda q: _json(200, connection_summary(self.daemon.connects, q)),
            "/api/list-connections": lambda q: _json(200, list_connections(self.daemon.connects, q)),
        }
        handler = routes.get(path)
        if handler is None:
            return _error(404, f"no such path {path!r}; try /metrics, /health, /api/connection-summary, /api/list-connections")
        if method != "GET":
            return _error(405, f"method {method} not allowed: this API is read-only (GET)")
        try:
            if self.daemon.connects is not None:  # answers exact up to this request
                self.daemon.connects.refresh()
            return handler(query)
        except InvalidQuery as e:
            return _error(400, str(e))
        except Exception:
            log.exception("HTTP %s %s failed", method, path)
            return _error(500, "internal error; see the daemon's log")

    def _metrics(self, _query) -> Tuple[int, str, bytes]:
        text = metrics.render(metrics.snapshot(self.daemon), self.daemon.cfg.metrics.top_commands)
        return 200, metrics.CONTENT_TYPE, text.encode()


def _json(status: int, answer: Dict[str, Any]) -> Tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(answer) + "\n").encode()


def _error(status: int, message: str) -> Tuple[int, str, bytes]:
    return _json(status, {"error": message})


def _response(status: int, ctype: str, body: bytes) -> bytes:
    head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    if status == 405:
        head += "Allow: GET\r\n"
    return (head + "\r\n").encode() + body
