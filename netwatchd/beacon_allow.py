"""The beacon allow-list (pure): which (source, destination) pairs may call home on a timer.

Three kinds of entries, each parsed here so that config.py can name a bad one and the beacon
tracker (netwatchd.alerting.beacons) can match them:
  destinations  an IP address or CIDR, optionally with a port ("192.0.2.0/24", "192.0.2.1:443",
                "[2001:db8::/32]:443", "[::1]:53"), or any address on one port ("*:123")
  names         a DNS/TLS name, exactly ("ntp.ubuntu.com") or every name under a domain
                ("*.debian.org" matches deb.debian.org, not debian.org itself); they allow a
                pair only when the operator trusts names (beacons.trust_dns_names)
  commands      a command name as the kernel keeps it (comm: at most 15 bytes, no "/"), written
                as netwatchd shows it (netwatchd.text: "\\x1b" for ESC, "\\\\" for a backslash)
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Tuple, Union

from netwatchd.text import unescape

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

DESTINATION_FORMS = "an IP address or CIDR with an optional port (192.0.2.0/24, 192.0.2.1:443, [2001:db8::/32]:443) or *:PORT"
NAME_FORMS = "a DNS name (ntp.ubuntu.com) or a wildcard for every name under a domain (*.debian.org)"
COMMAND_FORMS = ("a command name as the kernel keeps it: 1 to 15 bytes, no '/', written as netwatchd shows it"
                 " (\\x1b for a control character, \\\\ for a backslash)")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class DestinationRule:
    network: Optional[Network]  # None: any address
    port: int  # 0: any port

    def matches(self, address: str, port: int) -> bool:
        if self.port and self.port != port:
            return False
        if self.network is None:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return ip.version == self.network.version and ip in self.network


def parse_destination(text: str) -> DestinationRule:
    """'192.0.2.0/24', '192.0.2.1:443', '[2001:db8::/32]:443', '::1', '*:123' -> a rule."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{text!r} is not {DESTINATION_FORMS}")
    text = text.strip()
    host, port = text, 0
    if text.startswith("["):  # [IPv6 or IPv6/len]:port
        inner, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not {DESTINATION_FORMS}")
        host, port = inner, _port(rest[1:], text)
    elif text.count(":") == 1:  # IPv4, CIDR or * with a port
        host, _, p = text.partition(":")
        port = _port(p, text)
    if host == "*":
        if not port:
            raise ValueError(f"{text!r}: '*' needs a port (*:123); to allow every destination turn beacons off")
        return DestinationRule(None, port)
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not {DESTINATION_FORMS}") from None
    return DestinationRule(network, port)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: port {text!r} is not 1..65535")
    return int(text)


def parse_name(text: str) -> str:
    """A name or '*.domain', lower-cased; ValueError when it is neither."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not {NAME_FORMS}")
    name = text.strip().lower().rstrip(".")
    bare = name[2:] if name.startswith("*.") else name
    if not bare or len(bare) > 253 or not all(_LABEL.match(label) for label in bare.split(".")):
        raise ValueError(f"{text!r} is not {NAME_FORMS}")
    return name


def parse_command(text: str) -> str:
    try:  # the bytes the kernel keeps for a name netwatchd shows escaped
        raw = unescape(text) if isinstance(text, str) and text.isprintable() else b""
    except ValueError:
        raw = b""
    if not 0 < len(raw) <= 15 or b"/" in raw or b"\0" in raw:
        raise ValueError(f"{text!r} is not {COMMAND_FORMS}")
    return text


def name_matches(pattern: str, name: str) -> bool:
    name = name.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


class AllowList:
    """Compiled entries; `allows(source, destination, port, name)` is the one question.

    Names come from DNS answers seen on the wire, which a device (or whoever answers its
    queries) chooses, so they allow nothing unless `trust_names` (beacons.trust_dns_names)."""

    def __init__(self, destinations: Iterable[str] = (), names: Iterable[str] = (), commands: Iterable[str] = (),
                 trust_names: bool = False):
        self.destinations: Tuple[DestinationRule, ...] = tuple(parse_destination(d) for d in destinations)
        self.names: Tuple[str, ...] = tuple(parse_name(n) for n in names)
        self.commands = frozenset(parse_command(c) for c in commands)
        self.trust_names = trust_names

    def allows(self, source: str, destination: str, port: int, name: str = "") -> bool:
        kind, _, who = source.partition(":")
        if kind == "command" and who in self.commands:
            return True
        if name and self.trust_names and any(name_matches(p, name) for p in self.names):
            return True
        return any(rule.matches(destination, port) for rule in self.destinations)
