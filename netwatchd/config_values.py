"""One setting's YAML value checked against its declaration in netwatchd/config.py: its type
(from the default), range, choices, allow-list entries, interface names or listen address. A
bad value is a ConfigError naming the file, the key path and what is wrong."""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Any


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names file, key and problem."""

    def __init__(self, source: str, key_path: str, problem: str):
        self.source = source
        self.key_path = key_path
        self.problem = problem
        where = f"{source}: {key_path}: " if key_path else f"{source}: "
        super().__init__(where + problem)


@dataclass(frozen=True)
class IntRange:
    """Bounds of an integer setting, used by the validator and shown in its messages."""

    low: int
    high: int


def convert_value(f: dataclasses.Field, default: Any, value: Any, source: str, path: str):
    """`value` as the setting `f` (whose default is `default`) declares it, or ConfigError."""
    meta = f.metadata
    if meta.get("allow"):
        return _allow_list(value, meta["allow"], source, path)
    if meta.get("interfaces"):
        return _interfaces(value, source, path)
    if meta.get("listen"):
        if not isinstance(value, str):
            raise ConfigError(source, path, f"expected a string, got {_show(value)}")
        try:
            split_listen(value)
        except ValueError as e:
            raise ConfigError(source, path, str(e)) from None
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"expected true or false, got {_show(value)}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"expected an integer, got {_show(value)}")
        bounds = meta.get("range")
        if bounds and not bounds.low <= value <= bounds.high:
            raise ConfigError(source, path, f"{value} is out of range {bounds.low}..{bounds.high}")
        if meta.get("power_of_two") and value & (value - 1):
            raise ConfigError(source, path, f"{value} is not a power of two")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, path, f"expected a number, got {_show(value)}")
        low, high = meta["float_range"]
        if not low <= value <= high:
            raise ConfigError(source, path, f"{value} is out of range {low}..{high}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(source, path, f"expected a string, got {_show(value)}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(source, path, f"{value!r} is not one of {', '.join(choices)}")
        return value
    raise TypeError(f"no converter for {path}")  # a programming error, not a user's


def _interfaces(value: Any, source: str, path: str):
    if value == "auto":
        return "auto"
    if not isinstance(value, list) or not value:
        raise ConfigError(source, path, f"expected \"auto\" or a list of interface names, got {_show(value)}")
    for name in value:
        if not isinstance(name, str) or not 0 < len(name) < 16 or any(c in name for c in "/ \t\n:"):
            raise ConfigError(source, path, f"{name!r} is not an interface name")
    return tuple(value)


def _allow_list(value: Any, parse, source: str, path: str) -> tuple:
    """A list of allow-list entries; each bad one is named with its position."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(source, path, f"expected a list, got {_show(value)}")
    for n, entry in enumerate(value):
        try:
            parse(entry)
        except ValueError as e:
            raise ConfigError(source, f"{path}[{n}]", str(e)) from None
    return tuple(value)


def split_listen(value: str):
    """'127.0.0.1:9637' or '[::1]:9637' -> (host, port); ValueError says what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:9637 or [::1]:9637)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host) or ipaddress.ip_address(host).version != 6:
            raise ValueError(f"{value!r}: {host!r} in brackets is not an IPv6 address")
    elif not _is_ip(host) or ":" in host:
        raise ValueError(f"{value!r}: {host!r} is not an IPv4 address (IPv6 goes in brackets: [::1]:9637)")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: port {port!r} is not 1..65535")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def type_name(value: Any) -> str:
    return {list: "a list", dict: "a mapping", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _show(value: Any) -> str:
    if isinstance(value, (list, dict)) or value is None:
        return type_name(value)
    return repr(value)
