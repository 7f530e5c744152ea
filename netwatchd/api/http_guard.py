"""What every HTTP listener checks before it answers (pure: no I/O, no asyncio).

- The Host header, against DNS rebinding: a page in the operator's browser whose name the
  attacker re-points to 127.0.0.1 reaches the listener with the attacker's name as Host. A Host
  naming anything but an IP address, `localhost` or a name the operator listed is refused (403).
- Header fields that must come once: two Content-Length (even equal) or one with a list value
  is a 400, as is a second Host.
- Numbers are bounded before int(): a long digit string is slow to convert and, past Python's
  4300 digits, raises.
- A cap on live connections: at the cap, the oldest connection still sending its request is
  closed to admit the newcomer (slowloris: idle connections must not starve GET /health).
- The request head as each listener has always read it (parse_head), and the target and header
  fields of a head aiohttp parsed (parse_target, header_fields), checked by the same rules.

netwatchd.api.http_edge applies them to every listener (metrics, ebpf-server's, the web UI).
README.md ("Metrics and the JSON API") documents what a client sees.
"""
from __future__ import annotations

import ipaddress
import math
import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, urlsplit

from netwatchd.allowed_hosts import parse_allowed_host

# Live connections per listener. Honest clients (a Prometheus scrape, a script) hold one or two
# for milliseconds. Under a connection flood a listener holds up to ~400 descriptors (these plus
# sockets accepted but not yet admitted: netwatchd.api.http_edge.LISTEN_BACKLOG per loop turn), so
# both listeners and the daemon's own ~60 (BPF, D-Bus) stay inside the 1024 a systemd service
# gets by default (DefaultLimitNOFILE); before the cap, idle connections alone exhausted them.
MAX_CONNECTIONS = 256
# Significant digits beyond which a decimal number is larger than any bound a listener checks
# (all are below 2**64, which has 20 digits); it is never converted.
MAX_DIGITS = 20
LOCALHOST = "localhost"

_DECIMAL = re.compile(r"([+-]?)([0-9]+)")


class BadRequest(Exception):
    """A request answered with an error status; the message is shown to the client as is."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# -- numbers --------------------------------------------------------------------------------------

def decimal(text: str, signed: bool = False) -> Union[int, float, None]:
    """A decimal integer of ASCII digits (with an optional sign when `signed`) as an int; None when
    `text` is not one; -inf/inf when it has more than MAX_DIGITS significant digits (leading zeros
    do not count), so it fails any bound the caller checks without ever being converted."""
    match = _DECIMAL.fullmatch(text)
    if match is None or (match.group(1) and not signed):
        return None
    negative = match.group(1) == "-"
    digits = match.group(2).lstrip("0") or "0"
    if len(digits) > MAX_DIGITS:
        return -math.inf if negative else math.inf
    return -int(digits) if negative else int(digits)


# -- the request head ------------------------------------------------------------------------------

def parse_head(head: bytes) -> Tuple[str, str, Dict[str, List[str]]]:
    """(method, path, query) of a request head (request line + headers, CRLF CRLF included), or
    BadRequest with the listener's status and message. The HTTP edge frames requests with
    aiohttp's parser; this says, in our words, what is wrong with a head aiohttp refused."""
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
    path, query = parse_target(target)
    return method, path, query


def parse_target(target: str) -> Tuple[str, Dict[str, List[str]]]:
    """(path, query) of a request target: a path (not a URL, not *), its query UTF-8."""
    if not target.isascii():  # aiohttp hands over undecodable bytes as surrogates
        raise BadRequest(400, "request head is not ASCII")
    if not target.startswith("/"):
        raise BadRequest(400, "request target must be a path")
    url = urlsplit(target)
    try:
        query = parse_qs(url.query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(400, "query string is not UTF-8") from None
    return url.path, query


# -- header fields --------------------------------------------------------------------------------

def header_fields(raw: Sequence[Tuple[bytes, bytes]]) -> Dict[str, List[str]]:
    """parse_headers for the (name, value) pairs aiohttp parsed, as they came: the same dict,
    and a non-ASCII byte is the same 400."""
    fields: Dict[str, List[str]] = {}
    for name, value in raw:
        if not (name.isascii() and value.isascii()):
            raise BadRequest(400, "request head is not ASCII")
        fields.setdefault(name.decode("ascii").strip().lower(), []).append(value.decode("ascii").strip())
    return fields


def parse_headers(head: bytes) -> Dict[str, List[str]]:
    """Every value of each header field, by lower-case name, of a request head that parse_head
    accepted (ASCII, every line with a colon)."""
    fields: Dict[str, List[str]] = {}
    for line in head.decode("ascii").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), []).append(value.strip())
    return fields


def single(fields: Dict[str, List[str]], name: str, shown: str) -> Optional[str]:
    """The one value of a field that may come at most once (None when absent); a second is a 400:
    two parties reading the request (a proxy and us) could each pick another."""
    values = fields.get(name, [])
    if len(values) > 1:
        raise BadRequest(400, f"{shown} given {len(values)} times; send it once")
    return values[0] if values else None


def content_length(fields: Dict[str, List[str]], max_bytes: int) -> int:
    """The body's length from Content-Length (0 when absent). A chunked body is refused (411) here;
    a listener that takes them (netwatchd/api/http_edge.py, `chunked`) does not ask."""
    if "transfer-encoding" in fields:
        raise BadRequest(411, "send the body with a Content-Length (chunked bodies are not accepted)")
    text = single(fields, "content-length", "Content-Length")
    if text is None:
        return 0
    length = decimal(text)  # "5, 5" (a list) or "+5" is not a length
    if length is None:
        raise BadRequest(400, f"malformed Content-Length {text!r}")
    if length > max_bytes:
        raise BadRequest(413, f"request body over {max_bytes} bytes")
    return int(length)


# -- the Host header ------------------------------------------------------------------------------

def host_name(value: str) -> Optional[str]:
    """The host part of a Host header value, lower case, without port or trailing dot: an IP
    address as its canonical text, a name as given; None when the value is malformed."""
    value = value.lower()
    if value.startswith("["):  # [IPv6]:port
        inner, sep, port = value[1:].partition("]")
        address = _ip(inner)
        if not sep or address is None or address.version != 6 or not _port(port):
            return None
        return str(address)
    host, sep, port = value.partition(":")
    if sep and not _port(sep + port):
        return None
    address = _ip(host)
    if address is not None:
        return str(address)
    return host[:-1] if host.endswith(".") else host


def host_allowed(value: Optional[str], allowed: Iterable[str]) -> bool:
    """Whether a request with this Host header value may be answered.

    - None or empty: no Host at all (an HTTP/1.0 client, a raw script). Browsers always send
      one, so such a request cannot come from a rebinding page: answered.
    - An IP address (IPv4, [IPv6]): answered. A rebinding page always arrives under a DNS name;
      a page whose URL holds our address is served by us, not by an attacker.
    - localhost, or a name in `allowed` (case-insensitive, a trailing dot ignored): answered.
    - Anything else: refused.

    The port is not compared: a rebinding page must already use our port to reach us, so it
    tells nothing, while behind a port forward or a proxy the port a client typed is not ours."""
    if not value:
        return True
    host = host_name(value)
    if host is None:
        return False
    if _ip(host) is not None or host == LOCALHOST:
        return True
    return host in {parse_allowed_host(name) for name in allowed}


def check_host(fields: Dict[str, List[str]], allowed: Iterable[str], setting: str) -> None:
    """BadRequest 403 unless host_allowed; 400 for two Host fields. `setting` is the listener's
    allowed_hosts key, named in the refusal so its operator knows where to add a name."""
    value = single(fields, "host", "Host")
    if not host_allowed(value, allowed):
        raise BadRequest(403, f"Host {value!r} is not allowed here: use an IP address or localhost in the URL, "
                              f"or add the name to {setting}")


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _port(text: str) -> bool:
    """What may follow the host: nothing, ':' or ':' and up to 5 digits (which port does not matter)."""
    return text in ("", ":") or re.fullmatch(r":[0-9]{1,5}", text) is not None


# -- the connection cap ---------------------------------------------------------------------------

class ConnectionCap:
    """The live connections of one listener, each with the function that closes it.

    A connection is admitted as `receiving` (its request is still arriving) and becomes
    `answering` once the whole request (head and body) is in, for as long as its answer takes (a
    streamed answer too); kept open for another request, it is `receiving` again (waiting).
    Admitting one beyond `limit` closes the oldest receiving connection: a slowloris holds
    connections by sending nothing, or slowly, so its connections are always the oldest receiving
    ones, while an honest client's request arrives at once. Only when none is receiving is the oldest answering one closed. The
    newcomer is always admitted: refusing it would hand the listener to whoever holds the cap.
    `dropped` counts the connections closed so (netwatchd_http_connections_dropped_total)."""

    def __init__(self, limit: int = MAX_CONNECTIONS):
        if limit < 1:
            raise ValueError("a listener needs room for one connection")
        self.limit = limit
        self.dropped = 0
        self._receiving: Dict[int, Callable[[], None]] = {}  # oldest first (insertion order)
        self._answering: Dict[int, Callable[[], None]] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._receiving) + len(self._answering)

    def admit(self, close: Callable[[], None]) -> int:
        """A new connection; returns its key for received() and release()."""
        key = self._next
        self._next += 1
        self._receiving[key] = close
        if len(self) > self.limit:
            pool = self._receiving if len(self._receiving) > 1 else self._answering
            oldest = next(iter(pool))
            close_oldest = pool.pop(oldest)
            self.dropped += 1
            close_oldest()
        return key

    def received(self, key: int) -> None:
        """The connection's whole request is in: it is closed for room only as a last resort."""
        close = self._receiving.pop(key, None)
        if close is not None:
            self._answering[key] = close

    def waiting(self, key: int) -> None:
        """The connection was answered and is kept open for another request (keep-alive): it is
        receiving again, as the newest, since what it sends next is as unknown as a newcomer's."""
        close = self._answering.pop(key, None) or self._receiving.pop(key, None)
        if close is not None:
            self._receiving[key] = close

    def release(self, key: int) -> None:
        """The connection ended (answered, timed out, gone, or closed by admit)."""
        self._receiving.pop(key, None)
        self._answering.pop(key, None)
