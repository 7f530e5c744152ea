"""The fleet section's values (config.py's `fleet:`), parsed and checked: Alertmanager URLs,
identity overrides, and the credential files read at load and at every reload, so a bad one is a
named ConfigError instead of a delivery that fails later (netwatchd/api/alertmanager.py reads them
again at each send: a rotated token is picked up without a reload)."""
from __future__ import annotations

import re
import ssl
from urllib.parse import urlsplit

# What a label value netwatchd itself sets (segment, host) may be: printable, no spaces, so an
# operator can type it in a matcher; the length keeps a label far under Prometheus' limits.
IDENTITY = re.compile(r"[A-Za-z0-9_.:/@+-]{1,128}")
URL_FORMS = "an Alertmanager base URL: http://host:9093 or https://host/prefix (no query, no user)"


def parse_alertmanager_url(entry) -> str:
    """One entry of fleet.alertmanager_urls, without a trailing slash; ValueError says why not."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError(f"{entry!r} is not {URL_FORMS}")
    url = entry.strip()
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number or out of range
    except ValueError as e:
        raise ValueError(f"{entry!r} is not {URL_FORMS}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{entry!r}: the scheme must be http or https, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise ValueError(f"{entry!r}: no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{entry!r}: credentials in the URL would be logged; use fleet.username and "
                         "fleet.password_file, or fleet.bearer_token_file")
    if parts.query or parts.fragment:
        raise ValueError(f"{entry!r}: no query or fragment (netwatchd appends /api/v2/alerts)")
    if port == 0:
        raise ValueError(f"{entry!r}: port 0")
    if parts.path.rstrip("/").endswith("/api/v2/alerts"):
        raise ValueError(f"{entry!r}: give the base URL; netwatchd appends /api/v2/alerts itself")
    return url.rstrip("/")


def check_identity(value: str) -> str:
    """A segment or host id override: '' (computed) or one label-safe token; else the problem."""
    if value and not IDENTITY.fullmatch(value):
        return f"{value!r} must be 1..128 of A-Z a-z 0-9 _ . : / @ + - (it becomes a label value)"
    return ""


def read_secret(path: str) -> str:
    """A password or token file's content without its trailing newline; OSError when unreadable,
    ValueError when empty."""
    with open(path, encoding="utf-8") as f:
        text = f.read().rstrip("\r\n")
    if not text:
        raise ValueError("the file is empty")
    return text


def tls_context(ca_file: str) -> ssl.SSLContext:
    """The client TLS context: the system's CAs, or only ca_file's; OSError or ssl.SSLError
    when the file cannot be used."""
    return ssl.create_default_context(cafile=ca_file or None)


def file_problem(kind: str, path: str) -> str:
    """'' when `path` can be used as the given kind of file ('ca', 'secret'), else why not."""
    try:
        if kind == "ca":
            tls_context(path)
        else:
            read_secret(path)
    except ssl.SSLError as e:  # an OSError too: asked first
        return f"{path} holds no usable PEM certificate: {e.reason or e}"
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    except (ValueError, UnicodeDecodeError) as e:
        return f"{path}: {e}"
    return ""
