"""Alerts into journald as structured entries: the only module besides logsetup that talks to it.

One entry per alert, with the kind's MESSAGE_ID (systemd/netwatchd.catalog explains each one to
`journalctl -x`), its PRIORITY, SYSLOG_IDENTIFIER=netwatchd and NETWATCHD_* fields, so that
`journalctl MESSAGE_ID=...` or `journalctl NETWATCHD_KIND=fan_out` finds alerts without parsing
messages. Without journald (a foreground run, a container without it) the same fields go to
stderr as one key=value line, so an alert is never silently lost.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Callable, Dict, Optional, TextIO

from netwatchd.read_model import Alert
from netwatchd.logsetup import JOURNAL_SOCKET
from netwatchd.text import printable

log = logging.getLogger(__name__)

SYSLOG_IDENTIFIER = "netwatchd"
FIELD_PREFIX = "NETWATCHD_"
MAX_FIELD_NAME = 64  # journald drops fields with longer names


def field_name(key: str) -> str:
    """A detail key as a journal field name: journald accepts only A-Z, 0-9 and '_'."""
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()) or "DETAIL"
    return (FIELD_PREFIX + name)[:MAX_FIELD_NAME]


def number(value: float) -> str:
    """Numbers as an operator reads them: 40, not 40.0; at most six decimals."""
    value = round(float(value), 6)
    return str(int(value)) if value.is_integer() else repr(value)


def journal_fields(alert: Alert, identity_fields: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Every field of the alert's journal entry, all as printable strings (pure, for tests).

    Command names, hostnames and DNS names are escaped where they are decoded (netwatchd.text);
    the values pass through printable once more, backslashes kept, so that no control character
    from anywhere (a detail another part added) reaches `journalctl` on a terminal."""
    fields = {
        "MESSAGE": alert.message,
        "MESSAGE_ID": alert.message_id,
        "PRIORITY": str(alert.priority),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "NETWATCHD_ALERT_ID": alert.id,
        "NETWATCHD_KIND": alert.kind,
        "NETWATCHD_SUBJECT": alert.subject,
        "NETWATCHD_OBSERVED": number(alert.observed),
        "NETWATCHD_BASELINE": number(alert.baseline),
        "NETWATCHD_SCORE": number(alert.score),
    }
    for key, value in sorted(alert.details.items()):
        name = field_name(key)
        # The fixed fields above, and an earlier detail that sanitizes to the same name, win:
        # a detail must never overwrite what the catalog and scripts rely on.
        if name not in fields:
            fields[name] = str(value)
        else:
            log.debug("alert detail %r dropped from the journal entry: %s is taken", key, name)
    # the fleet's ids (NETWATCHD_HOST_ID, NETWATCHD_SEGMENT, NETWATCHD_MAC...: api/fleet_labels.py),
    # so journal-remote's record of many hosts is searched by the ids Alertmanager groups by; a
    # detail of the same name (the device's mac) says the same, or means what the catalog says
    for name, value in (identity_fields or {}).items():
        fields.setdefault(name, value)
    return {name: printable(value, escape_backslash=False) for name, value in fields.items()}


def _quoted(value: str) -> str:
    if value and re.fullmatch(r"[A-Za-z0-9_.:/@+,-]+", value):
        return value
    return json.dumps(value, ensure_ascii=False)  # spaces, quotes, '=', newlines: one safe token


def stderr_line(fields: Dict[str, str]) -> str:
    """The fallback: one line, every field as KEY=value (quoted when it needs to be)."""
    return "netwatchd: alert: " + " ".join(f"{k}={_quoted(v)}" for k, v in fields.items())


class JournalSink:
    """An alert sink (AlertPipeline calls emit) writing to journald, or to stderr without it."""

    def __init__(self, socket_path: str = JOURNAL_SOCKET, stream: Optional[TextIO] = None,
                 identity_fields: Optional[Callable[[Alert], Dict[str, str]]] = None):
        # socket_path only decides journald or stderr (tests point it elsewhere); systemd.journal
        # itself always sends to the standard socket. stream None = sys.stderr at the time.
        self.socket_path = socket_path
        self._stream = stream
        self.identity_fields = identity_fields  # alert -> the fleet's id fields; the daemon sets it

    def emit(self, alert: Alert) -> None:
        fields = journal_fields(alert, self.identity_fields(alert) if self.identity_fields else None)
        # Checked per alert, as logsetup does at start: journald may come or go (a restart of
        # systemd-journald while we run) and an alert must reach whichever is there.
        if os.path.exists(self.socket_path):
            try:
                self._send(fields)
                return
            except OSError as e:
                log.error("journald refused alert %s (%s): writing it to stderr", alert.id, e)
        stream = self._stream or sys.stderr
        print(stderr_line(fields), file=stream, flush=True)

    def _send(self, fields: Dict[str, str]) -> None:
        from systemd import journal  # imported only when journald is there to talk to

        fields = dict(fields)
        journal.send(fields.pop("MESSAGE"), **fields)
