"""Logging to journald (structured) when its socket exists, to stderr otherwise.

A foreground run on a terminal also logs to stderr, so `make run` shows what happens.
"""
from __future__ import annotations

import logging
import os
import sys

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
    set_level(level)
    return "+".join(targets)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(LEVELS[level])
