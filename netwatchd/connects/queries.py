"""Validation of D-Bus query arguments, and the answers' shape (pure).

The D-Bus edge maps InvalidQuery to org.freedesktop.DBus.Error.InvalidArgs; the message says
which argument was wrong and what would be right.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List

from netwatchd.connects.history import Counts
from netwatchd.connects.records import ConnectionRecord
from netwatchd.errors import InvalidQuery  # noqa: F401  (raised here; edges catch it from here or errors)

LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 1000
COMMAND_MAX_LEN = 15  # the kernel's comm is 16 bytes with its terminating NUL




@dataclass(frozen=True)
class SummaryQuery:
    pid: int
    command: str
    duration_sec: int


def check_summary(pid: int, command: str, duration_sec: int, max_window_sec: int) -> SummaryQuery:
    if pid and command:
        raise InvalidQuery("give either a pid or a command, not both (pid=%d, command=%r)" % (pid, command))
    if not pid and not command:
        raise InvalidQuery("give a pid (non-zero) or a command name (non-empty)")
    if command and len(command.encode()) > COMMAND_MAX_LEN:
        raise InvalidQuery(
            "command %r is longer than %d bytes; the kernel keeps only the first %d"
            % (command, COMMAND_MAX_LEN, COMMAND_MAX_LEN)
        )
    if command and re.search(r"[\x00-\x1f]", command):
        raise InvalidQuery("command %r contains control characters" % command)
    if not 1 <= duration_sec <= max_window_sec:
        raise InvalidQuery("duration_sec must be between 1 and %d, got %d" % (max_window_sec, duration_sec))
    return SummaryQuery(pid, command, duration_sec)


def check_list(pid: int, limit: int) -> int:
    """Returns the effective limit (0 means the default)."""
    if limit > LIST_MAX_LIMIT:
        raise InvalidQuery("limit must be at most %d, got %d" % (LIST_MAX_LIMIT, limit))
    return limit or LIST_DEFAULT_LIMIT


def summary_answer(query: SummaryQuery, counts: Counts, commands: List[str]) -> Dict[str, Any]:
    who = "pid %d" % query.pid if query.pid else "command %r" % query.command
    if query.pid and commands:
        who += " (%s)" % ", ".join(commands)
    message = "%s made %d connection attempt%s in the last %d s: %d succeeded, %d failed, %d in progress" % (
        who,
        counts.attempts,
        "" if counts.attempts == 1 else "s",
        query.duration_sec,
        counts.succeeded,
        counts.failed,
        counts.in_progress,
    )
    if counts.udp_sends:
        message += "; %d unconnected UDP send%s" % (counts.udp_sends, "" if counts.udp_sends == 1 else "s")
    return {
        "pid": query.pid,
        "command": query.command,
        "duration_sec": query.duration_sec,
        "total_attempts": counts.attempts,
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "in_progress": counts.in_progress,
        "udp_sends": counts.udp_sends,
        "commands": commands,
        "message": message,
    }


def record_answer(record: ConnectionRecord) -> Dict[str, Any]:
    return {
        "pid": record.pid,
        "tid": record.tid,
        "command": record.command,
        "uid": record.uid,
        "kind": record.kind,
        "family": record.family,
        "transport": record.transport,
        "destination": record.destination,
        "port": record.port,
        "return_code": record.return_code,
        "error": record.error_name,
        "outcome": record.outcome,
        "timestamp_usec": record.timestamp_usec,
    }
