"""The per-tick history behind `netwatchctl replay`: what each tick saw, in one SQLite file.

One row per tick: (time_usec, TickObservation.to_json()). The daemon record()s every tick into
a memory buffer; flush() writes the buffer in one transaction and prunes the file to the newest
`keep` ticks, and to at most `max_bytes` of table pages (the oldest ticks go first; freed pages
are reused, so the file stops growing there). The buffer never holds more than `max_buffered`
ticks: reaching it flushes, so memory stays bounded even if nobody calls flush(). A crash loses
at most the buffered ticks.

WAL, synchronous=NORMAL and mode 0640, like the inventory (netwatchd.store.inventory): a replay may
read the file while the daemon writes it.

Errors: HistoryError names the file and the problem; CorruptHistoryError, its subclass, means
the file itself is unusable (not SQLite, damaged, not ours). The daemon logs either and runs
without history; the history is a convenience, never worth the daemon.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from netwatchd.errors import StoreError
from netwatchd.store.sqlite import BUSY_TIMEOUT_MS, FileKind, in_transaction, open_private
from netwatchd.alerting.observation import TickObservation

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_BUFFERED = 600  # ticks held in memory before a write, whether flush() is called or not
# ...or this many bytes of them: a busy host's ticks (100k connection starts each) are MBs apiece,
# and holding a minute of them would cost the daemon tens of MB of memory for nothing.
MAX_BUFFERED_BYTES = 1 << 20
CACHE_KIB = 256  # the writer's page cache
READ_BATCH = 1000  # rows per query when reading: no read transaction stays open for long

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ticks (time_usec INTEGER PRIMARY KEY, data TEXT NOT NULL)",
)


class HistoryError(StoreError):
    """The history file cannot be used; `path` and `problem` say which and why."""


class CorruptHistoryError(HistoryError):
    """The file is not a usable netwatchd tick history."""


HISTORY = FileKind("netwatchd tick history", HistoryError, CorruptHistoryError, _SCHEMA,
                   frozenset({"schema_version", "ticks"}), SCHEMA_VERSION)


def _error(path: str, doing: str, e: sqlite3.Error) -> StoreError:
    return HISTORY.sqlite_error(path, doing, e)


class TickHistory:
    """Recorded ticks, oldest first. Calls are serialized by a lock (the daemon may save from a
    worker thread while its event loop records)."""

    def __init__(self, path: str, conn: sqlite3.Connection, keep: int, writable: bool,
                 max_buffered: int = MAX_BUFFERED, max_bytes: int = 0):
        self.path = path
        self.keep = keep  # settable: the next flush prunes to the new value
        self.max_bytes = max_bytes  # settable too; 0: no bound but `keep`
        self.max_buffered = max_buffered
        self._conn = conn
        self._writable = writable
        self._buffer: List[Tuple[int, str]] = []
        self._buffered_bytes = 0
        self._lock = threading.RLock()
        # rows in the file, kept exact by flush(): pruning then walks only the rows it deletes,
        # not the `keep` it keeps (a day of ticks is ~100 MB of table pages)
        self._stored = self._count() if writable else 0

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, keep: int, max_buffered: int = MAX_BUFFERED, max_bytes: int = 0) -> "TickHistory":
        """Opens (or creates) the daemon's history. CorruptHistoryError if the file is not a
        healthy history, HistoryError for any other reason it cannot be used."""
        # No quick_check: a day of ticks can be hundreds of MB, too much to read at every start;
        # damage shows as CorruptHistoryError when the page is touched.
        conn = open_private(HISTORY, path, quick_check=False)
        try:
            # appended to and pruned from its ends: a small page cache does (SQLite's default
            # 2 MB stayed resident once a busy host's ticks, megabytes each, went through it)
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            return cls(path, conn, keep, writable=True, max_buffered=max_buffered, max_bytes=max_bytes)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def open_readonly(cls, path: str) -> "TickHistory":
        """Opens an existing history to read (a replay): never creates or changes the file."""
        try:
            HISTORY.check_header(path)
        except FileNotFoundError:
            raise HistoryError(path, "no such file: no history recorded here (is alerts.history_ticks 0, "
                                     "or has netwatchd not saved yet?)") from None
        except OSError as e:
            raise HistoryError(path, f"cannot read: {e.strerror or e}") from e
        try:
            uri = Path(path).absolute().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as e:
            raise _error(path, "cannot open", e) from e
        if "ticks" not in tables:
            conn.close()
            raise CorruptHistoryError(path, "not a netwatchd tick history (no ticks table)")
        return cls(path, conn, keep=0, writable=False)

    def close(self) -> None:
        """Writes what is buffered, then closes (the last connection removes the WAL)."""
        with self._lock:
            try:
                if self._writable:
                    self.flush()
            finally:
                self._conn.close()

    def __enter__(self) -> "TickHistory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def record(self, obs: TickObservation) -> None:
        """Buffers one tick; writes the buffer when it is full. A failed write is logged and
        the buffer dropped: recording never raises into the tick that called it."""
        with self._lock:
            data = obs.to_json()
            self._buffer.append((int(obs.time_usec), data))
            self._buffered_bytes += len(data)
            if len(self._buffer) >= self.max_buffered or self._buffered_bytes >= MAX_BUFFERED_BYTES:
                try:
                    self.flush()
                except HistoryError as e:
                    log.error("tick history: %s (dropped %d buffered ticks)", e, self.max_buffered)

    def flush(self) -> int:
        """Writes the buffer in one transaction and prunes to the newest `keep` ticks; returns
        how many ticks were written. On failure the buffer is dropped (memory stays bounded)
        and HistoryError raised."""
        with self._lock:
            if not self._writable:
                raise HistoryError(self.path, "opened read-only")
            rows, self._buffer, self._buffered_bytes = self._buffer, [], 0
            keep = max(0, int(self.keep))
            def write() -> int:
                stored = self._stored + (self._insert(rows[-keep:]) if keep else 0)
                stored -= self._prune(stored - keep)
                return stored - self._prune_to_bytes(stored)

            try:
                stored = in_transaction(self._conn, write)
            except sqlite3.Error as e:
                raise _error(self.path, "cannot write ticks", e) from e
            self._stored = stored
            return min(len(rows), keep)

    def _insert(self, rows: List[Tuple[int, str]]) -> int:
        """Adds `rows`; returns how many rows the table gained. A tick with the time of a stored
        one (the clock stepped back) replaces it."""
        before = self._conn.total_changes
        self._conn.executemany("INSERT OR IGNORE INTO ticks (time_usec, data) VALUES (?, ?)", rows)
        added = self._conn.total_changes - before
        if added < len(rows):
            self._conn.executemany("UPDATE ticks SET data = ? WHERE time_usec = ?", [(d, t) for t, d in rows])
        return added

    def _prune(self, excess: int) -> int:
        """Deletes the `excess` oldest ticks; returns how many went."""
        if excess <= 0:
            return 0
        return self._conn.execute(
            "DELETE FROM ticks WHERE time_usec <= (SELECT time_usec FROM ticks ORDER BY time_usec LIMIT 1 OFFSET ?)",
            (excess - 1,)).rowcount

    def _prune_to_bytes(self, stored: int) -> int:
        """Deletes the oldest ticks while the table's pages exceed max_bytes (the newest tick
        stays, whatever its size); returns how many went. Ticks differ in size, so it deletes
        a tenth at a time and measures again: PRAGMAs, no scan of what stays."""
        if self.max_bytes <= 0:
            return 0
        gone = 0
        while stored - gone > 1 and self._used_bytes() > self.max_bytes:
            gone += self._prune(min(stored - gone - 1, max(1, (stored - gone) // 10)))
        return gone

    def _used_bytes(self) -> int:
        """Bytes of the file's pages in use (freed pages are reused before the file grows)."""
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self._conn.execute("PRAGMA page_size").fetchone()[0]

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # -- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Stored ticks (not counting the buffer)."""
        with self._lock:
            return self._stored if self._writable else self._count()

    def _count(self) -> int:
        try:
            return self._conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
        except sqlite3.Error as e:
            raise _error(self.path, "cannot count ticks", e) from e

    def read(self) -> Iterator[TickObservation]:
        """Every recorded tick, oldest first (the buffer is written first). Read in batches, so
        the daemon can keep writing meanwhile; a row that cannot be decoded is skipped with a
        warning."""
        if self._writable and self._buffer:
            self.flush()
        after: Optional[int] = None
        while True:
            with self._lock:
                try:
                    if after is None:
                        rows = self._conn.execute("SELECT time_usec, data FROM ticks ORDER BY time_usec LIMIT ?",
                                                  (READ_BATCH,)).fetchall()
                    else:
                        rows = self._conn.execute(
                            "SELECT time_usec, data FROM ticks WHERE time_usec > ? ORDER BY time_usec LIMIT ?",
                            (after, READ_BATCH)).fetchall()
                except sqlite3.Error as e:
                    raise _error(self.path, "cannot read ticks", e) from e
            if not rows:
                return
            for time_usec, data in rows:
                try:
                    yield TickObservation.from_json(data)
                except (ValueError, TypeError) as e:
                    log.warning("%s: skipped the tick at %d, its record is unreadable: %s", self.path, time_usec, e)
            after = rows[-1][0]
