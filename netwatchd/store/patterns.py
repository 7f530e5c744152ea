"""Known (device, peer, port, transport) patterns on disk, so a restart does not make a device's
usual peers look first-seen (and a busy LAN raise fan_out after every restart).

The TC classifier reports a pattern only the first time its LRU map sees it; the map is empty
after a restart. Every reported pattern is kept here (patterns.sqlite3 in the state
directory, its own file: the inventory's schema stays as it is), newest `max_patterns` only --
the size of the kernel's LRU, so what is kept is what the kernel could hold. At start the
device probe loads them back into the map (DeviceProbe.remember_patterns), oldest first so the
newest are the most recently used, before any interface is attached.

Writes are batched: patterns arrive with their ring-buffer event and are written with the
inventory, every devices.store_interval_sec and at stop, one transaction each. A SIGKILL loses
at most one interval of them (those few look new once more). A damaged file is moved aside and
a new one started; a file that cannot be used otherwise leaves the daemon running without
persistence -- a pattern store is never worth the daemon.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import sqlite3
from dataclasses import dataclass
from typing import List, Optional, Tuple

from netwatchd.store.inventory import CorruptStoreError, StoreError, open_or_start_anew
from netwatchd.store.sqlite import FileKind, in_transaction, open_private

log = logging.getLogger(__name__)

PATTERNS_FILE = "patterns.sqlite3"
TRANSPORTS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}

_TABLE = """CREATE TABLE IF NOT EXISTS patterns (
    mac TEXT NOT NULL,
    address TEXT NOT NULL,   -- the peer, as ipaddress prints it
    port INTEGER NOT NULL,
    transport INTEGER NOT NULL,  -- IP protocol number
    seen_usec INTEGER NOT NULL,  -- when the kernel last reported it as first-seen
    PRIMARY KEY (mac, address, port, transport)
) WITHOUT ROWID"""
_INDEX = "CREATE INDEX IF NOT EXISTS patterns_by_age ON patterns (seen_usec)"
PATTERNS = FileKind("netwatchd pattern store", StoreError, CorruptStoreError,
                    ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", _TABLE, _INDEX),
                    frozenset({"schema_version", "patterns"}), 1)
_UPSERT = """INSERT INTO patterns (mac, address, port, transport, seen_usec) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (mac, address, port, transport) DO UPDATE SET seen_usec = excluded.seen_usec"""


@dataclass(frozen=True)
class Pattern:
    mac: str  # aa:bb:cc:dd:ee:ff
    address: str
    port: int
    transport: int  # IP protocol number

    @property
    def family(self) -> int:
        return 10 if ipaddress.ip_address(self.address).version == 6 else 2

    def address_bytes(self) -> bytes:
        """16 bytes as the kernel keys them: an IPv4 address in the first 4, zeros after."""
        return ipaddress.ip_address(self.address).packed.ljust(16, b"\0")


def transport_number(name: str) -> Optional[int]:
    if name in TRANSPORTS:
        return TRANSPORTS[name]
    return int(name) if name.isdigit() else None


class PatternStore:
    def __init__(self, path: str, conn: sqlite3.Connection, capacity: int):
        self.path = path
        self.capacity = capacity
        self._conn = conn
        self._pending: List[Tuple[str, str, int, int, int]] = []

    @classmethod
    def open(cls, path: str, capacity: int) -> "PatternStore":
        return cls(path, open_private(PATTERNS, path, quick_check=True), capacity)

    def seen(self, mac: str, address: str, port: int, transport: str, _name: str = "", when_usec: int = 0) -> None:
        """A pattern the kernel reported (a DeviceMonitor pattern listener); written at flush()."""
        number = transport_number(transport)
        if number is None:
            return
        self._pending.append((mac, address, int(port), number, when_usec or _now_usec()))

    def flush(self) -> None:
        """What arrived since the last flush, in one transaction; the oldest beyond capacity go."""
        if not self._pending:
            return
        rows, self._pending = self._pending, []

        def work() -> None:
            self._conn.executemany(_UPSERT, rows)
            (count,) = self._conn.execute("SELECT COUNT(*) FROM patterns").fetchone()
            if count > self.capacity:
                self._conn.execute(
                    "DELETE FROM patterns WHERE (mac, address, port, transport) IN (SELECT mac, address, port, "
                    "transport FROM patterns ORDER BY seen_usec LIMIT ?)", (count - self.capacity,))

        try:
            in_transaction(self._conn, work)
        except sqlite3.Error as e:  # a full disk: keep them for the next flush (bounded)
            self._pending = (rows + self._pending)[-self.capacity:]
            log.error("cannot save known patterns to %s: %s", self.path, e)

    def newest(self, limit: int) -> List[Pattern]:
        """At most `limit` patterns, the newest ones, oldest first."""
        rows = self._conn.execute(
            "SELECT mac, address, port, transport FROM patterns ORDER BY seen_usec DESC LIMIT ?", (limit,)).fetchall()
        return [Pattern(mac, address, port, transport) for mac, address, port, transport in reversed(rows)]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.close()


def _now_usec() -> int:
    import time

    return time.time_ns() // 1000


def open_patterns(state_dir: str, capacity: int) -> Optional[PatternStore]:
    """The pattern store of a state directory, or None (logged) when it cannot be had."""
    return open_or_start_anew(lambda path: PatternStore.open(path, capacity), os.path.join(state_dir, PATTERNS_FILE),
                              "known patterns")
