"""The names besides IP addresses and localhost that an HTTP listener answers to (each
listener's `allowed_hosts`): parsed here for config.py, matched by netwatchd.api.http_guard.
A page elsewhere must not reach a loopback listener by DNS rebinding, so a request's Host header
names one of these, localhost or an IP address, or is refused."""
from __future__ import annotations

import ipaddress
import re

ALLOWED_HOST_FORMS = "a host name as clients type it in URLs (nas.lan, monitor.example.org), without a port"
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_allowed_host(entry) -> str:
    """One entry of a listener's allowed_hosts, normalized (lower case, no trailing dot);
    ValueError says what is wrong (config.py names the entry)."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError(f"{entry!r} is not {ALLOWED_HOST_FORMS}")
    name = entry.strip().lower()
    if _ip(name.strip("[]")) is not None:
        raise ValueError(f"{entry!r} is an IP address, which is always accepted as Host; list names only "
                         "(this list does not restrict which clients may connect)")
    if ":" in name:
        raise ValueError(f"{entry!r}: give the name without a port (any port is accepted)")
    name = name[:-1] if name.endswith(".") else name
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{entry!r} is not {ALLOWED_HOST_FORMS}")
    return name
