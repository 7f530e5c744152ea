"""ebpf-server's HTTP API (the v1.0.0 its README documents), as a pure request -> response function.

    GET  /                          service information (any method, as ebpf-server)
    GET  /health                    {"service", "status": "healthy", "version"}
    POST /api/connection-summary    {"pid": N} or {"command"|"process_name": NAME}, "duration" 1..3600
    GET  /api/list-connections      ?pid=&limit=   (limit per process: default 100, at most 1000)
    POST /api/list-connections      {"pid", "limit"}

Requests, answers, sentences and error bodies ({"error": <status text>, "message"}) are those of
ebpf-server's handlers, so its users' scripts run unchanged. Where ebpf-server reported something
false we report the truth: return_code is what connect() returned (ebpf-server read it before the
call, so always 0), protocol is the socket's (it guessed from the port), timestamps are UTC. The
differences are listed in README.md, "Coming from ebpf-server".

No I/O here: the HTTP edge (netwatchd/api/http_edge.py, through netwatchd/api/http.py's
ebpf_server_listener) parses the request and sends the answer; the numbers come from the read
model's connect queries (read_model.ConnectQueries: summary, list_per_process, max_window_sec).
"""
from __future__ import annotations

import datetime
import functools
import json
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from netwatchd.api.http_guard import decimal
from netwatchd.errors import InvalidQuery
from netwatchd.read_model import ConnectionRecord, ConnectQueries

SERVICE = "eBPF Network Monitor"
HEALTH_SERVICE = "ebpf-server"
MAX_DURATION_SEC = 3600
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
JSON = "application/json"

# Go's http.StatusText, which ebpf-server puts in "error".
STATUS_TEXT = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    411: "Length Required", 413: "Request Entity Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 505: "HTTP Version Not Supported",
}

# Ours, after ebpf-server's fields: each connect once under its final outcome (README, Summary).
SUMMARY_EXTRAS = ("succeeded", "failed", "refused", "timed_out", "other_failed", "in_progress", "unknown",
                  "udp_sends", "latency_p50_usec", "latency_p90_usec", "latency_p99_usec")

PROTOCOLS = {"tcp": "TCP", "udp": "UDP"}  # anything else was "Unknown" to ebpf-server too

ENDPOINTS = {
    "POST /api/connection-summary": "Get connection summary for a process",
    "GET|POST /api/list-connections": "List network connections",
    "GET /health": "Service health check",
}


class Response(NamedTuple):
    status: int
    content_type: str
    body: bytes
    headers: Tuple[Tuple[str, str], ...] = ()


class _Rejected(Exception):
    """A request answered with an error body; the message is shown to the caller as is."""

    def __init__(self, status: int, message: str, headers: Tuple[Tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


def error_response(status: int, message: str, headers: Tuple[Tuple[str, str], ...] = ()) -> Response:
    return _json(status, {"error": STATUS_TEXT.get(status, ""), "message": message}, headers)


def not_found() -> Response:
    # ebpf-server answered unknown paths with Go's http.NotFound: plain text, not JSON.
    return Response(404, "text/plain; charset=utf-8", b"404 page not found\n", (("X-Content-Type-Options", "nosniff"),))


def handle(connects: ConnectQueries, method: str, path: str, query: Dict[str, List[str]], body: bytes,
           version: str) -> Response:
    """One request; `connects` answers the connect queries (the read model, or the connect engine)."""
    routes: Dict[str, Tuple[Tuple[str, ...], Callable[[], Dict[str, Any]]]] = {
        "/": ((), lambda: service_info(version)),
        "/health": (("GET",), lambda: health(version)),
        "/api/connection-summary": (("POST",), lambda: connection_summary(connects, body)),
        "/api/list-connections": (("GET", "POST"), lambda: list_connections(
            connects, *(list_arguments_get(query) if method == "GET" else list_arguments_post(body)))),
    }
    route = routes.get(path)
    if route is None:
        return not_found()
    methods, answer = route
    try:
        if methods and method not in methods:
            allowed = " and ".join(methods)
            raise _Rejected(405, f"Only {allowed} method{'s are' if len(methods) > 1 else ' is'} allowed",
                            (("Allow", ", ".join(methods)),))
        return _json(200, answer())
    except _Rejected as e:
        return error_response(e.status, str(e), e.headers)


# -- the routes ----------------------------------------------------------------------------------

def service_info(version: str) -> Dict[str, Any]:
    return {
        "service": SERVICE,
        "version": version,
        "description": "HTTP API for eBPF-based network connection monitoring",
        "endpoints": dict(ENDPOINTS),
        "documentation": "See netwatchd's README.md, section \"Coming from ebpf-server\"",
        "server": "netwatchd",
    }


def health(version: str) -> Dict[str, Any]:
    # ebpf-server encoded a Go map, whose keys come out sorted; so do ours.
    return {"server": "netwatchd", "service": HEALTH_SERVICE, "status": "healthy", "version": version}


def connection_summary(connects: ConnectQueries, body: bytes) -> Dict[str, Any]:
    request = decode_request(body, {"pid": int, "command": str, "process_name": str, "duration": int})
    pid = request.get("pid") or 0
    command = request.get("command") or request.get("process_name") or ""
    duration = request.get("duration") or 0
    # ebpf-server's checks, in its order and with its words
    if duration <= 0:
        raise _Rejected(400, "duration must be positive")
    if duration > MAX_DURATION_SEC:
        raise _Rejected(400, f"duration cannot exceed {MAX_DURATION_SEC} seconds")
    if pid and command:
        raise _Rejected(400, "cannot specify both PID and command")
    if not pid and not command:
        raise _Rejected(400, "must specify either PID or command")
    # ours: ebpf-server counted nothing for these (or, above 2^32, another process's connects)
    if pid:
        _check_pid(pid)
    window = connects.max_window_sec
    if duration > window:
        raise _Rejected(400, f"duration cannot exceed {window} seconds (connections.max_window_sec)")
    try:
        counts = connects.summary(pid, command, duration)
    except InvalidQuery as e:
        raise _Rejected(400, str(e)) from None
    total = counts["total_attempts"]
    answer: Dict[str, Any] = {"total_attempts": total}
    if command:  # ebpf-server's fields are omitempty: only the one asked about is present
        answer["command"] = command
        message = f"Found {total} connection attempts from command '{command}' over {duration} seconds"
    else:
        answer["pid"] = pid
        message = f"Found {total} connection attempts from PID {pid} over {duration} seconds"
    answer["duration"] = duration
    answer["message"] = message
    for ours in SUMMARY_EXTRAS:
        answer[ours] = counts[ours]
    return answer


def list_arguments_get(query: Dict[str, List[str]]) -> Tuple[Optional[int], Optional[int]]:
    """(pid, limit) from ?pid=&limit=; as Go's Query().Get: the first value, "" = not given."""
    def one(name: str, problem: str) -> Optional[int]:
        values = query.get(name) or [""]
        if values[0] == "":
            return None
        value = _atoi(values[0])
        if value is None:
            raise _Rejected(400, problem)
        return value
    return one("pid", "Invalid PID parameter"), one("limit", "Invalid limit parameter")


def list_arguments_post(body: bytes) -> Tuple[Optional[int], Optional[int]]:
    request = decode_request(body, {"pid": int, "limit": int})
    return request.get("pid"), request.get("limit")


def list_connections(connects: ConnectQueries, pid: Optional[int], limit: Optional[int]) -> Dict[str, Any]:
    if limit is not None and limit > MAX_LIMIT:
        raise _Rejected(400, f"limit cannot exceed {MAX_LIMIT}")
    if limit is not None and limit < 0:
        raise _Rejected(400, "limit cannot be negative")
    if pid is not None:
        _check_pid(pid)
    by_pid, truncated = connects.list_per_process(pid or 0, DEFAULT_LIMIT if limit is None else limit,
                                                  is_ip_connect)
    # A process whose records were all cut by limit 0 is counted but not listed, as ebpf-server did;
    # Go writes map keys sorted as strings.
    connections = {str(p): [connection_answer(r) for r in records]
                   for p, records in sorted(by_pid.items(), key=lambda item: str(item[0])) if records}
    shown = sum(len(records) for records in connections.values())
    if pid is not None:
        message = f"Found {shown} connections for PID {pid}"
    else:
        message = f"Found {shown} total connections across {len(by_pid)} processes"
        if truncated:
            message += " (results truncated due to limit)"
    return {"total_pids": len(by_pid), "connections": connections, "truncated": truncated, "message": message}


def is_ip_connect(record: ConnectionRecord) -> bool:
    """What ebpf-server listed: connect() calls to an IP destination (its "ip:port" field has no
    form for unix sockets, and it never saw unconnected UDP sends)."""
    return record.kind == "connect" and record.family in ("inet", "inet6")


def connection_answer(record: ConnectionRecord) -> Dict[str, Any]:
    return {
        "pid": record.pid,
        "command": record.command,
        "destination": destination(record.family, record.destination, record.port),
        "protocol": PROTOCOLS.get(record.transport, "Unknown"),
        "return_code": record.return_code,
        "timestamp": rfc3339_seconds(record.timestamp_usec // 1_000_000),
        # ours, after ebpf-server's fields
        "outcome": record.outcome,
        "error": record.error_name,
        "latency_usec": record.latency_usec,
        "end_error": record.end_error_name,
        "timestamp_usec": record.timestamp_usec,
    }


def destination(family: str, address: str, port: int) -> str:
    return f"[{address}]:{port}" if family == "inet6" else f"{address}:{port}"


@functools.lru_cache(maxsize=4096)  # records come in bursts: a listing has few distinct seconds
def rfc3339_seconds(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- decoding as Go's encoding/json into ebpf-server's request structs ----------------------------

def decode_request(body: bytes, fields: Dict[str, type]) -> Dict[str, Any]:
    """The fields of the first JSON value in `body`, as Go's json.Decoder fills a struct: unknown
    keys are ignored, a key matches its field case-insensitively, null leaves a field unset,
    text after the first value is not read. Anything else is ebpf-server's one 400.
    Integers are bounded before conversion (http_guard.decimal): one too long for int64 is inf,
    which fails a field as Go's decoder fails it, and is ignored under an unknown key as Go
    skips it (json.loads would raise on one over 4300 digits, wherever it is)."""
    invalid = _Rejected(400, "Invalid JSON request body")
    text = body.decode("utf-8", "replace").lstrip(" \t\r\n")
    try:
        value, _ = _DECODER.raw_decode(text)
    except ValueError:
        raise invalid from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid
    request: Dict[str, Any] = {}
    for name, kind in fields.items():
        key = name if name in value else next((k for k in value if k.lower() == name), None)
        if key is None or value[key] is None:
            continue
        item = value[key]
        if kind is int and (isinstance(item, bool) or not isinstance(item, int) or abs(item) > INT64_MAX):
            raise invalid
        if kind is str and not isinstance(item, str):
            raise invalid
        request[name] = item
    return request


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_int=lambda text: decimal(text, signed=True))


def _atoi(text: str) -> Optional[int]:
    """Go's strconv.Atoi: optional sign, ASCII digits (leading zeros as many as you like), within
    int64; None when it would fail. Bounded before conversion: 5000 digits are out of range."""
    value = decimal(text, signed=True)
    return value if value is not None and -INT64_MAX - 1 <= value <= INT64_MAX else None


def _check_pid(pid: int) -> None:
    if not 1 <= pid <= UINT32_MAX:
        raise _Rejected(400, f"pid must be between 1 and {UINT32_MAX}, got {pid}")


# Go's json.Encoder writes UTF-8 as is but escapes these (they can only occur inside strings).
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json(status: int, answer: Dict[str, Any], headers: Tuple[Tuple[str, str], ...] = ()) -> Response:
    # compact, one line and a newline: byte for byte what Go's json.Encoder writes
    text = json.dumps(answer, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES)
    return Response(status, JSON, (text + "\n").encode("utf-8", "replace"), headers)
