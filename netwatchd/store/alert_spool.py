"""The fleet's spool: the alerts owed to Alertmanager, in <state>/fleet-spool.sqlite3, so alerts
raised while no Alertmanager answers are delivered when one comes back, across restarts.

One row per alert (its label fingerprint), the entry as JSON (netwatchd/api/fleet_alerts.py
says what it holds). The delivery thread is the only writer: each change is written in one
transaction as soon as it is made (an alert is on disk before its first send), so a SIGKILL
loses nothing that was raised before the sender took it. A damaged file is moved aside and the
spool starts empty (logged).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
from typing import Any, Dict, Iterable, List, Optional

from netwatchd.store.inventory import CorruptStoreError, StoreError, open_or_start_anew
from netwatchd.store.sqlite import FileKind, in_transaction, open_private

log = logging.getLogger(__name__)

SPOOL_FILE = "fleet-spool.sqlite3"
WAL_LIMIT = 1 << 20
SPOOL = FileKind("netwatchd alert spool", StoreError, CorruptStoreError,
                 ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                  "CREATE TABLE IF NOT EXISTS alerts (key TEXT PRIMARY KEY, entry TEXT NOT NULL)"),
                 frozenset({"schema_version", "alerts"}), 1)


class AlertSpool:
    def __init__(self, path: str, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, path: str) -> "AlertSpool":
        conn = open_private(SPOOL, path, quick_check=True)
        # a spool is small and rewritten in place: its WAL shrinks back to this after a checkpoint
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        conn.execute("PRAGMA wal_autocheckpoint = 256")  # pages (1 MiB): checkpoint that often
        return cls(path, conn)

    def load(self) -> List[Dict[str, Any]]:
        """Every spooled entry; a row that does not parse is dropped (logged), not fatal."""
        entries = []
        for key, text in self._conn.execute("SELECT key, entry FROM alerts"):
            try:
                entry = json.loads(text)
                if not isinstance(entry, dict) or entry.get("key") != key:
                    raise ValueError("not an entry of this key")
            except ValueError as e:
                log.warning("%s: dropped an unreadable spooled alert (%s)", self.path, e)
                continue
            entries.append(entry)
        return entries

    def write(self, changed: Iterable[Dict[str, Any]], removed: Iterable[str] = ()) -> None:
        """Entries changed and keys gone, in one transaction; StoreError if the disk refuses."""
        rows = [(e["key"], json.dumps(e, separators=(",", ":"), sort_keys=True)) for e in changed]
        gone = [(key,) for key in removed]
        if not rows and not gone:
            return

        def work():
            self._conn.executemany("INSERT OR REPLACE INTO alerts (key, entry) VALUES (?, ?)", rows)
            self._conn.executemany("DELETE FROM alerts WHERE key = ?", gone)

        try:
            in_transaction(self._conn, work)
        except sqlite3.Error as e:
            raise SPOOL.sqlite_error(self.path, "cannot write", e) from e

    def bytes_used(self) -> int:
        """The file's size with its WAL (the spool's cost on disk)."""
        return sum(os.path.getsize(self.path + s) for s in ("", "-wal") if os.path.exists(self.path + s))

    def close(self) -> None:
        self._conn.close()


def open_spool(state_dir: str) -> Optional[AlertSpool]:
    """The spool of a state directory, or None (logged: alerts are then kept in memory only)."""
    return open_or_start_anew(AlertSpool.open, os.path.join(state_dir, SPOOL_FILE), "alert spool",
                              "alerts wait in memory only")
