"""Application-layer metadata from the snippets the TC classifier sends up (pure).

The kernel copies the first up-to-1024 bytes of an L4 payload that looks like DNS, HTTP, a TLS
ClientHello or DHCP. Everything here takes those bytes and returns a small frozen record or
None. The input is untrusted and may be cut anywhere, so:

- nothing raises, and work is linear in the input (loops consume input or are capped);
- a record is returned from a cut snippet only with what arrived complete: a Host header or a
  server name is never guessed from a fragment;
- every string is printable text (netwatchd.text.printable): control and format characters,
  invalid UTF-8 and backslashes are escaped (`\\x1b`, `\\u202e`, `\\\\`), so what a device sends
  can never drive the terminal or the log viewer it is shown in; an HTTP path is %XX-encoded
  as well (its non-ASCII bytes; control bytes make it no request).

Choices a consumer should know:
- HTTP host: lowercased; the port is kept unless it is the scheme's default (80; 443 for an
  https:// absolute-form target), so 'example.com:8080' and 'example.com' stay different
  services. For an absolute-form target the URI's authority wins over the Host header
  (RFC 9112 3.2.2, what a proxy acts on); userinfo in it is dropped, never stored.
- HTTP path: at most `max_path` characters; a path that was longer, or that the snippet cut,
  ends in TRUNCATION_MARK ('…'), counted in the limit.
- DHCP: addresses that are 0.0.0.0 (not given) are ''; the hostname keeps its case (it is a
  label a person reads); DNS names and TLS server names are lowercased. Of a server's options
  only the first router counts (the client's default route) and at most MAX_DHCP_DNS DNS
  servers (a list of whole addresses: a trailing piece shorter than 4 bytes is dropped).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from netwatchd.devices.model import mac_from_bytes
from netwatchd.devices.dns import DnsAnswer, DnsMessage, DnsQuestion, parse_dns
from netwatchd.text import printable

# One entry point for every application parser; DNS lives in its own module for size.
__all__ = [
    "DhcpInfo", "DnsAnswer", "DnsMessage", "DnsQuestion", "HttpRequest", "TRUNCATION_MARK",
    "parse_dhcp", "parse_dns", "parse_http_request", "parse_tls_sni",
]

TRUNCATION_MARK = "\u2026"
MAX_HOST = 255  # a DNS name's text form is at most 253; room for a port is not worth more


def _u16(buf: bytes, pos: int) -> int:
    return (buf[pos] << 8) | buf[pos + 1]


def _capped(text: str, limit: int, cut: bool = False) -> str:
    """`text` in at most `limit` characters, ending in the mark if it was (or already had been) cut."""
    limit = max(limit, 1)
    if cut or len(text) > limit:
        return text[: limit - 1] + TRUNCATION_MARK
    return text


# ---------------------------------------------------------------------------------------- HTTP

HTTP_METHODS = frozenset(
    {b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE"}
)
_HTTP_VERSION = re.compile(rb"HTTP/1\.[0-9]\Z")
_ABSOLUTE_FORM = re.compile(rb"(https?)://([^/?#]*)([/?#].*)?\Z", re.IGNORECASE | re.DOTALL)
# Bytes no request-target may hold (RFC 9112 3.2): controls and space, which ends the target.
_BAD_TARGET_BYTES = re.compile(rb"[\x00-\x20\x7f]")
_NON_ASCII = re.compile(rb"[\x80-\xff]")


@dataclass(frozen=True)
class HttpRequest:
    method: str
    host: str  # '' if neither the target nor a complete Host header named one
    path: str  # '' for CONNECT, '*' for server-wide OPTIONS


def _percent_encoded(target: bytes) -> str:
    # Some clients send raw UTF-8 in paths; %XX keeps it readable, ASCII and reversible. Control
    # bytes never get here (no request); a backslash is escaped as in every other string.
    return printable(_NON_ASCII.sub(lambda m: b"%%%02X" % m.group()[0], target))


def _host_text(authority: bytes, default_port: bytes) -> str:
    """'User@Example.COM:80' -> 'example.com'; a non-default port stays; IPv6 keeps brackets."""
    host = authority.rpartition(b"@")[2].strip().lower()
    name, colon, port = host.rpartition(b":")
    if colon and port in (b"", default_port) and (name.endswith(b"]") or b":" not in name):
        host = name  # only 'name:port' or '[v6]:port'; a bare IPv6 address is not split
    return printable(host[:MAX_HOST])  # cut before escaping: never half an escape


def _request_line(line: bytes, line_complete: bool) -> Optional[Tuple[bytes, bytes, bool]]:
    """(method, target, target_cut) from a request line, which the snippet may have cut."""
    parts = line.split(b" ")
    if parts[0] not in HTTP_METHODS:
        return None
    if line_complete:
        if len(parts) != 3 or not _HTTP_VERSION.match(parts[2]):
            return None
        return parts[0], parts[1], False
    if len(parts) == 2:  # cut inside the target
        return parts[0], parts[1], True
    if len(parts) == 3 and (b"HTTP/1.0".startswith(parts[2]) or b"HTTP/1.1".startswith(parts[2])):
        return parts[0], parts[1], False
    return None


def _host_header(headers: bytes) -> Optional[bytes]:
    """The first Host header among the complete lines; the last piece is cut, so not trusted."""
    for line in headers.split(b"\n")[:-1]:
        line = line.rstrip(b"\r")
        if not line:
            break  # end of the header section
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"host":
            return value
    return None


def parse_http_request(payload: bytes, max_path: int = 256) -> Optional[HttpRequest]:
    """Method, host and path of an HTTP/1.x request; None if it does not start like one.

    A snippet cut inside the request line still gives the method and the (marked) path; one cut
    inside the headers gives the host only if its Host line arrived whole, else ''.
    """
    line_end = payload.find(b"\n")
    line_complete = line_end >= 0
    line = payload[:line_end].rstrip(b"\r") if line_complete else payload
    parsed = _request_line(line, line_complete)
    if parsed is None:
        return None
    method, target, cut = parsed
    if not target or _BAD_TARGET_BYTES.search(target):
        return None
    header_host = _host_header(payload[line_end + 1 :]) if line_complete else None
    host = _host_text(header_host, b"80") if header_host is not None else ""

    absolute = _ABSOLUTE_FORM.match(target)
    if absolute:
        scheme, authority, rest = absolute.groups()
        if cut and rest is None:
            return None  # the authority itself may be cut: no host worth reporting
        host = _host_text(authority, b"443" if scheme.lower() == b"https" else b"80") or host
        path = _percent_encoded(rest or b"/")
        if path[:1] != "/":
            path = "/" + path  # 'http://h?q' asks for '/?q'
    elif target.startswith(b"/"):
        path = _percent_encoded(target)
    elif method == b"OPTIONS" and target == b"*" and not cut:
        path = "*"
    elif method == b"CONNECT" and not cut:
        return HttpRequest("CONNECT", _host_text(target, b""), "")
    else:
        return None
    return HttpRequest(method.decode("ascii"), host, _capped(path, max_path, cut))


# ---------------------------------------------------------------------------------------- TLS

TLS_HANDSHAKE = 22
TLS_CLIENT_HELLO = 1
TLS_EXT_SERVER_NAME = 0
SNI_HOST_NAME = 0


def _server_name(ext: bytes) -> Optional[str]:
    """RFC 6066 3: ServerNameList; the first host_name entry, lowercased, no trailing dot."""
    if len(ext) < 2:
        return None
    end = min(len(ext), 2 + _u16(ext, 0))
    pos = 2
    while pos + 3 <= end:
        name_type, length = ext[pos], _u16(ext, pos + 1)
        pos += 3
        if pos + length > end:
            return None
        if name_type == SNI_HOST_NAME:
            name = ext[pos : pos + length].lower()
            name = name[:-1] if name.endswith(b".") else name
            return printable(name[:MAX_HOST]) or None
        pos += length
    return None


def parse_tls_sni(payload: bytes) -> Optional[str]:
    """The server name of a TLS ClientHello at the start of a TCP payload; None if there is no
    SNI (an IP-literal target has none), it is not a ClientHello, or the snippet ends before it.

    Only the first record is read: bytes past its declared end belong to another record.
    """
    if len(payload) < 9 or payload[0] != TLS_HANDSHAKE or payload[1] != 3:
        return None
    if payload[5] != TLS_CLIENT_HELLO:
        return None
    record_end = min(len(payload), 5 + _u16(payload, 3))
    hello_end = min(record_end, 9 + ((payload[6] << 16) | _u16(payload, 7)))
    pos = 9 + 2 + 32  # legacy_version, random
    if pos + 1 > hello_end:
        return None
    pos += 1 + payload[pos]  # legacy_session_id
    if pos + 2 > hello_end:
        return None
    pos += 2 + _u16(payload, pos)  # cipher_suites
    if pos + 1 > hello_end:
        return None
    pos += 1 + payload[pos]  # legacy_compression_methods
    if pos + 2 > hello_end:
        return None  # no extensions at all (SSLv3-style hello), or cut before them
    extensions_end = min(hello_end, pos + 2 + _u16(payload, pos))
    pos += 2
    while pos + 4 <= extensions_end:
        ext_type, ext_len = _u16(payload, pos), _u16(payload, pos + 2)
        pos += 4
        if ext_type == TLS_EXT_SERVER_NAME:
            if pos + ext_len > extensions_end:
                return None  # cut inside the name: a fragment is not a name
            return _server_name(payload[pos : pos + ext_len])
        pos += ext_len
    return None


# ---------------------------------------------------------------------------------------- DHCP

BOOTP_SIZE = 236  # fixed BOOTP header (RFC 951/2131), options follow the magic cookie
DHCP_MAGIC_COOKIE = b"\x63\x82\x53\x63"
DHCP_MESSAGE_TYPES = {
    1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE",
    8: "INFORM",
}
OPT_PAD, OPT_END = 0, 255
OPT_HOSTNAME, OPT_REQUESTED_IP, OPT_MESSAGE_TYPE, OPT_VENDOR_CLASS = 12, 50, 53, 60
OPT_ROUTER, OPT_DNS, OPT_SERVER_ID = 3, 6, 54
_WANTED_OPTIONS = frozenset({OPT_HOSTNAME, OPT_REQUESTED_IP, OPT_MESSAGE_TYPE, OPT_VENDOR_CLASS,
                             OPT_ROUTER, OPT_DNS, OPT_SERVER_ID})
BOOTP_OPS = {1: "request", 2: "reply"}
MAX_DHCP_DNS = 8  # DNS servers kept from one reply: a real one offers two or three


@dataclass(frozen=True)
class DhcpInfo:
    message_type: str  # DISCOVER, OFFER, ..., 'TYPE<n>' if unknown, '' for plain BOOTP
    client_mac: str  # 'aa:bb:cc:dd:ee:ff', '' unless the hardware is Ethernet
    hostname: str
    requested_ip: str
    client_ip: str  # ciaddr
    your_ip: str  # yiaddr: what the server hands out
    vendor_class: str
    op: str = "request"  # BOOTP op: 'request' (client to server) or 'reply' (server to client)
    server_id: str = ""  # option 54: the server's own address, as it names itself
    router: str = ""  # option 3, the first router: the default gateway offered
    dns: Tuple[str, ...] = ()  # option 6: the DNS servers offered, in order


def _ipv4_text(raw: bytes) -> str:
    if len(raw) != 4 or raw == b"\0\0\0\0":
        return ""
    return "%d.%d.%d.%d" % tuple(raw)


def _ipv4_list(raw: bytes, limit: int) -> Tuple[str, ...]:
    """Whole 4-byte addresses in order, 0.0.0.0 left out, at most `limit`."""
    addresses = (_ipv4_text(raw[i : i + 4]) for i in range(0, min(len(raw) // 4, limit) * 4, 4))
    return tuple(a for a in addresses if a)


def _dhcp_options(payload: bytes, pos: int) -> Dict[int, bytes]:
    """The options we read, each instance concatenated (RFC 3396); stops at END or at a cut."""
    found: Dict[int, bytes] = {}
    size = len(payload)
    while pos < size:
        code = payload[pos]
        if code == OPT_PAD:
            pos += 1
            continue
        if code == OPT_END or pos + 1 >= size:
            break
        end = pos + 2 + payload[pos + 1]
        if end > size:
            break  # cut inside an option: keep what came before
        if code in _WANTED_OPTIONS:
            found[code] = found.get(code, b"") + payload[pos + 2 : end]
        pos = end
    return found


def parse_dhcp(payload: bytes) -> Optional[DhcpInfo]:
    """A BOOTP/DHCPv4 message (with the magic cookie) as sent to or from ports 67/68."""
    if len(payload) < BOOTP_SIZE + 4 or payload[0] not in (1, 2):  # op: BOOTREQUEST, BOOTREPLY
        return None
    if payload[BOOTP_SIZE : BOOTP_SIZE + 4] != DHCP_MAGIC_COOKIE:
        return None
    options = _dhcp_options(payload, BOOTP_SIZE + 4)
    kind = options.get(OPT_MESSAGE_TYPE, b"")
    ethernet = payload[1] == 1 and payload[2] == 6  # htype, hlen
    return DhcpInfo(
        message_type=DHCP_MESSAGE_TYPES.get(kind[0], f"TYPE{kind[0]}") if kind else "",
        client_mac=mac_from_bytes(payload[28:34]) if ethernet else "",
        hostname=printable(options.get(OPT_HOSTNAME, b"").rstrip(b"\0")),  # some end theirs in a NUL
        requested_ip=_ipv4_text(options.get(OPT_REQUESTED_IP, b"")),
        client_ip=_ipv4_text(payload[12:16]),
        your_ip=_ipv4_text(payload[16:20]),
        vendor_class=printable(options.get(OPT_VENDOR_CLASS, b"").rstrip(b"\0")),
        op=BOOTP_OPS[payload[0]],
        server_id=_ipv4_text(options.get(OPT_SERVER_ID, b"")),
        router=_ipv4_text(options.get(OPT_ROUTER, b"")[:4]),
        dns=_ipv4_list(options.get(OPT_DNS, b""), MAX_DHCP_DNS),
    )
