"""Logging to journald (structured) when its socket exists, to stderr otherwise.

A foreground run on a terminal also logs to stderr, so `make run` shows what happens.
"""
from __future__ import annotations

import logging
import os
import sys

from netwatchd.text import printable

JOURNAL_SOCKET = "/run/systemd/journal/socket"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(level: str) -> str:
    """Configures the root logger; returns where logs go ("journal", "stderr" or both)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    targets = []
    if os.path.exists(JOURNAL_SOCKET):
        from systemd.journal import JournalHandler

        root.addHandler(JournalHandler(SYSLOG_IDENTIFIER="netwatchd"))
        targets.append("journal")
    if not targets or sys.stderr.isatty():
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("netwatchd: %(levelname)s: %(message)s"))
        root.addHandler(h)
        targets.append("stderr")
    for h in root.handlers:
        h.addFilter(PrintableMessages())
    set_level(level)
    return "+".join(targets)


class PrintableMessages(logging.Filter):
    """Log lines name what processes and devices chose (commands, hostnames, paths); those are
    escaped where they are decoded (netwatchd.text), and this makes sure no control character
    reaches journald or a terminal through any log line (escapes already there are kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            record.msg, record.args = printable(message, escape_backslash=False), None
        return True


def set_level(level: str) -> None:
    logging.getLogger().setLevel(LEVELS[level])
