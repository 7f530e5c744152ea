"""Alertmanager's API v2, as a client: POST /api/v2/alerts, and GET /api/v2/alerts to read what
other observers posted. The one module that talks HTTP to Alertmanager (urllib: the standard
library's client does TLS with a CA file, timeouts and proxies from the environment).

Every failure is a DeliveryError with a short `cause` that names it the same way each time
("connection refused", "timeout", "HTTP 503", ...), so the sender logs it once per cause and
counts it (netwatchd_fleet_delivery_failures_total{alertmanager, cause}).
"""
from __future__ import annotations

import base64
import errno
import json
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional

from netwatchd.fleet_settings import read_secret, tls_context

ALERTS_PATH = "/api/v2/alerts"
MAX_ANSWER = 16 << 20  # bytes of a GET answer read at most: all the fleet's alerts, not a flood
USER_AGENT = "netwatchd"


class DeliveryError(Exception):
    def __init__(self, cause: str, detail: str = ""):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.detail = detail


class Rejected(DeliveryError):
    """Alertmanager answered 400: it stored the valid alerts of the post and refused the others
    (their labels or times); posting them again would be refused again."""


class AlertmanagerClient:
    def __init__(self, fleet_cfg):
        self.cfg = fleet_cfg
        self._tls: Optional[ssl.SSLContext] = None
        self._tls_problem = ""
        try:
            self._tls = tls_context(fleet_cfg.ca_file)
        except (OSError, ssl.SSLError) as e:  # the file went away after the config was checked
            self._tls_problem = f"{fleet_cfg.ca_file}: {e}"
        # No proxy from the environment: Alertmanager is the fleet's own, as Prometheus reaches it.
        handlers = [urllib.request.ProxyHandler({})]
        if self._tls is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self._tls))
        self._opener = urllib.request.build_opener(*handlers)

    def _headers(self) -> Dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json", "Accept": "application/json"}
        try:
            if self.cfg.bearer_token_file:
                headers["Authorization"] = "Bearer " + read_secret(self.cfg.bearer_token_file)
            elif self.cfg.password_file:
                pair = f"{self.cfg.username}:{read_secret(self.cfg.password_file)}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise DeliveryError("credentials unreadable", str(e)) from None
        return headers

    def _request(self, url: str, method: str, body: Optional[bytes] = None) -> bytes:
        if url.startswith("https:") and self._tls is None:
            raise DeliveryError("CA file unusable", self._tls_problem)
        url = url.strip().rstrip("/")  # a base URL as written in the file: http://am:9093/
        request = urllib.request.Request(url + ALERTS_PATH + ("" if body else "?active=true&silenced=true"
                                                                                "&inhibited=true&unprocessed=true"),
                                         data=body, method=method, headers=self._headers())
        try:
            with self._opener.open(request, timeout=self.cfg.timeout_sec) as answer:
                return answer.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as e:
            text = e.read(300).decode("utf-8", "replace").strip()
            e.close()
            if e.code == 400 and method == "POST":
                raise Rejected("HTTP 400 (alerts refused)", text) from None
            if e.code == 404:
                raise DeliveryError("HTTP 404 (not Alertmanager's API v2 at this URL)", text) from None
            raise DeliveryError(f"HTTP {e.code}", text) from None
        except urllib.error.URLError as e:
            raise DeliveryError(*_cause(e.reason)) from None
        except (OSError, ValueError) as e:  # a reset mid-answer, a malformed status line
            raise DeliveryError(*_cause(e)) from None

    def post(self, url: str, alerts: List[Dict[str, Any]]) -> None:
        """Posts the alerts; returns when Alertmanager accepted them, else DeliveryError."""
        self._request(url, "POST", json.dumps(alerts, separators=(",", ":")).encode())

    def get(self, url: str) -> List[Dict[str, Any]]:
        """Every alert the Alertmanager at `url` holds (active, silenced and inhibited)."""
        body = self._request(url, "GET")
        if len(body) > MAX_ANSWER:
            raise DeliveryError("answer too large", f"over {MAX_ANSWER} bytes")
        try:
            alerts = json.loads(body)
        except ValueError:
            raise DeliveryError("not Alertmanager (the answer is not JSON)") from None
        if not isinstance(alerts, list):
            raise DeliveryError("not Alertmanager (the answer is not a list of alerts)")
        return [a for a in alerts if isinstance(a, dict)]


def _cause(reason) -> tuple:
    """(cause, detail) of a transport failure: named by kind, not by its changing text."""
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timeout", str(reason)
    if isinstance(reason, ssl.SSLError):
        return "TLS failed", str(reason)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused", str(reason)
    if isinstance(reason, PermissionError) or getattr(reason, "errno", None) == errno.EPERM:
        return ("not permitted (the unit's IPAddressDeny=? allow the address: README, \"A fleet\")",
                str(reason))
    if isinstance(reason, socket.gaierror):
        return "name not resolved", str(reason)
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable", str(reason)
    if isinstance(reason, ConnectionError):
        return "connection lost", str(reason)
    return type(reason).__name__ if not isinstance(reason, str) else "failed", str(reason)
