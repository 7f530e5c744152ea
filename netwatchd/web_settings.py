"""The web UI's section of the configuration (config.py's `web:`): where it listens, and the
credentials it asks for beyond loopback (netwatchd/api/web/)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Dict

from netwatchd.allowed_hosts import parse_allowed_host
from netwatchd.config_values import IntRange, split_listen


@dataclass(frozen=True)
class WebConfig:
    # A read-only web UI: devices, alerts, rates against their baselines, live.
    enabled: bool = field(default=False, metadata={"restart": True})
    # host:port of its listener, an IP literal; beyond loopback only with an auth file below.
    listen: str = field(default="127.0.0.1:9638", metadata={"listen": True, "restart": True})
    # As metrics.allowed_hosts, for this listener.
    allowed_hosts: tuple = field(default=(), metadata={"allow": parse_allowed_host})
    # Basic auth: "user:password" lines; or a bearer token (the file's first line).
    basic_auth_file: str = ""
    token_file: str = ""
    # Ticks of values and baselines the charts draw (alerting/tick_series.py).
    series_ticks: int = field(default=600, metadata={"range": IntRange(10, 86400), "restart": True})

    def check(self):
        if self.enabled and not ipaddress.ip_address(split_listen(self.listen)[0]).is_loopback and not (
                self.basic_auth_file or self.token_file):
            return "listen", ("beyond loopback the web UI shows which process talks where to anyone who reaches "
                              "it: set web.basic_auth_file or web.token_file, or keep 127.0.0.1 behind a proxy")
        return None


def parse_users(text: str) -> Dict[str, str]:
    """web.basic_auth_file's "user:password" lines (blank lines and # comments skipped) as
    {user: password}; ValueError names the first bad line."""
    users: Dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"line {n} is not user:password")
        users[user] = password
    if not users:
        raise ValueError("no user:password line")
    return users


def read_users(path: str) -> Dict[str, str]:
    """The users of a basic-auth file; OSError when unreadable, ValueError when malformed."""
    with open(path, encoding="utf-8") as f:
        return parse_users(f.read())


def users_problem(path: str) -> str:
    """'' when `path` is a usable basic-auth file, else why not."""
    try:
        read_users(path)
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    except (ValueError, UnicodeDecodeError) as e:
        return f"{path}: {e}"
    return ""
