"""Who may read the web UI, and what every answer of it carries (pure: no I/O but the auth files).

- The Host header is checked by the HTTP edge, as for every listener (netwatchd/api/http_edge.py,
  DNS rebinding).
- Beyond loopback the configuration demands web.basic_auth_file or web.token_file (config's
  WebConfig.check); when either is set, every request needs it, on loopback too: an operator who
  set a password expects it asked. The files are read at start and at each reload (a password
  changed in the file without a reload is not taken: the running config says which file, and a
  reload checks it first).
- SECURITY_HEADERS go on every answer, error pages too: a Content-Security-Policy that lets the
  page run only its own scripts from this origin (no inline script, nothing from elsewhere), no
  framing, no MIME sniffing, no referrer.
"""
from __future__ import annotations

import base64
import binascii
import hmac
from typing import Dict, Mapping, Optional

from netwatchd.fleet_settings import read_secret
from netwatchd.web_settings import read_users

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS: Dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
REALM = 'Basic realm="netwatchd", charset="UTF-8"'


class Credentials:
    """The users and token the running config names (web.basic_auth_file, web.token_file)."""

    def __init__(self, users: Optional[Dict[str, str]] = None, token: str = ""):
        self.users = users or {}
        self.token = token

    @classmethod
    def load(cls, web_cfg) -> "Credentials":
        """From the files of a WebConfig (OSError / ValueError as config.check_fleet_files says)."""
        users = read_users(web_cfg.basic_auth_file) if web_cfg.basic_auth_file else {}
        token = read_secret(web_cfg.token_file).splitlines()[0].strip() if web_cfg.token_file else ""
        return cls(users, token)

    @property
    def required(self) -> bool:
        return bool(self.users or self.token)

    def allows(self, headers: Mapping[str, str]) -> bool:
        """Whether a request's Authorization header names a user of the file with its password, or
        the token. Compared in constant time: the answer's timing does not tell how much was right."""
        if not self.required:
            return True
        scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme.lower() == "basic" and self.users:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            expected = self.users.get(user)
            # compared even for an unknown user, so that its answer takes as long
            ok = hmac.compare_digest(password.encode(), (expected or "\0").encode())
            return bool(sep) and expected is not None and ok
        return False
