"""Validation of D-Bus query arguments, and the answers' shape (pure).

The D-Bus edge maps InvalidQuery to org.freedesktop.DBus.Error.InvalidArgs; the message says
which argument was wrong and what would be right.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

from netwatchd.connects.history import Counts
from netwatchd.connects.latency import summary_percentiles
from netwatchd.connects.records import ConnectionRecord
from netwatchd.errors import InvalidQuery  # noqa: F401  (raised here; edges catch it from here or errors)
from netwatchd.text import printable, unescape

LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 1000
COMMAND_MAX_LEN = 15  # the kernel's comm is 16 bytes with its terminating NUL




@dataclass(frozen=True)
class SummaryQuery:
    pid: int
    command: str
    duration_sec: int


def check_summary(pid: int, command: str, duration_sec: int, max_window_sec: int) -> SummaryQuery:
    """`command` is the name as netwatchd shows it (records, alerts, metrics): a process that
    named itself with control characters, invalid UTF-8 or a backslash is asked for by its
    escaped name (netwatchd.text), e.g. '\\x1b[31mRED\\x1b[0m', which is also what a shell passes
    for that text in single quotes."""
    if pid and command:
        raise InvalidQuery("give either a pid or a command, not both (pid=%d, command='%s')"
                           % (pid, printable(command, escape_backslash=False)))
    if not pid and not command:
        raise InvalidQuery("give a pid (non-zero) or a command name (non-empty)")
    if command and not command.isprintable():
        # the raw name, never one netwatchd shows: say how to ask for it
        raise InvalidQuery("the command contains control characters; ask for it by the name netwatchd "
                           "shows (and matches): '%s'" % printable(command))
    try:
        kept = unescape(command)  # the bytes the kernel keeps for that name
    except ValueError:
        raise InvalidQuery("command '%s' has a backslash that starts no escape; netwatchd shows a backslash "
                           "in a name as \\\\ (and ESC as \\x1b)" % command) from None
    if len(kept) > COMMAND_MAX_LEN:
        raise InvalidQuery(
            "command '%s' is longer than %d bytes; the kernel keeps only the first %d"
            % (command, COMMAND_MAX_LEN, COMMAND_MAX_LEN)
        )
    if not 1 <= duration_sec <= max_window_sec:
        raise InvalidQuery("duration_sec must be between 1 and %d, got %d" % (max_window_sec, duration_sec))
    return SummaryQuery(pid, command, duration_sec)


def check_list(pid: int, limit: int) -> int:
    """Returns the effective limit (0 means the default)."""
    if limit > LIST_MAX_LIMIT:
        raise InvalidQuery("limit must be at most %d, got %d" % (LIST_MAX_LIMIT, limit))
    return limit or LIST_DEFAULT_LIMIT


def summary_answer(query: SummaryQuery, counts: Counts, in_progress: int, latency_buckets: Dict[int, int],
                   commands: List[str]) -> Dict[str, Any]:
    """Each connect() of the window once, under its final outcome (or in_progress while its
    handshake is pending); latency percentiles over the window's established handshakes."""
    who = "pid %d" % query.pid if query.pid else "command '%s'" % query.command
    if query.pid and commands:
        who += " (%s)" % ", ".join(commands)
    total = counts.attempts + in_progress
    latency = summary_percentiles(latency_buckets)
    message = ("%s made %d connection attempt%s in the last %d s: %d succeeded, %d failed "
               "(%d refused, %d timed out, %d other), %d in progress") % (
        who, total, "" if total == 1 else "s", query.duration_sec, counts.succeeded, counts.failed,
        counts.refused, counts.timed_out, counts.other_failed, in_progress)
    if counts.unknown:
        message += ", %d of unknown outcome" % counts.unknown
    if latency["latency_samples"]:
        message += "; handshake latency p50 %s, p90 %s, p99 %s" % tuple(
            _duration(latency[f"latency_p{q}_usec"]) for q in (50, 90, 99))
    if counts.udp_sends:
        message += "; %d unconnected UDP send%s" % (counts.udp_sends, "" if counts.udp_sends == 1 else "s")
    answer = {
        "pid": query.pid,
        "command": query.command,
        "duration_sec": query.duration_sec,
        "total_attempts": total,
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "refused": counts.refused,
        "timed_out": counts.timed_out,
        "other_failed": counts.other_failed,
        "in_progress": in_progress,
        "unknown": counts.unknown,
        "udp_sends": counts.udp_sends,
        "commands": commands,
        "message": message,
    }
    answer.update(latency)
    return answer


def _duration(usec: int) -> str:
    if usec >= 1_000_000:
        return "%.2f s" % (usec / 1e6)
    if usec >= 1000:
        return "%.1f ms" % (usec / 1e3)
    return "%d us" % usec


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
        "latency_usec": record.latency_usec,
        "end_error": record.end_error_name,
        "timestamp_usec": record.timestamp_usec,
    }
