"""The device inventory on disk: one SQLite file in the state directory.

Each device is a row keyed by MAC: the fields people filter on as columns, and the whole
Device.to_dict() as JSON beside them, so the dataclass can grow without a schema change and
loading gives back exactly what was saved. The caller batches: one save_devices() call is one
transaction, so a crash (even SIGKILL) loses at most the batch being written, never half of one.

WAL with synchronous=NORMAL: a commit is in the WAL (the OS has it) before save_devices()
returns, which survives the process dying; only a power cut can lose the last commits, and
never corrupts the file. That trade keeps a save to one write() and no fsync per batch.

Errors: StoreError names the file and the problem. CorruptStoreError, its subclass, means the
file itself is unusable (not SQLite, damaged, not ours): the daemon then move_aside()s it and
starts afresh. Anything else (permissions, a newer schema, a full disk) is not the file's fault
and must not cost the user their inventory.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
from typing import Dict, Iterable, List, Optional, Tuple

from netwatchd.devices.model import Device, normalize_mac
from netwatchd.errors import StoreError
from netwatchd.store.sqlite import FileKind, in_transaction, open_private

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS devices (
        mac TEXT PRIMARY KEY NOT NULL,
        first_seen_usec INTEGER NOT NULL,
        last_seen_usec INTEGER NOT NULL,
        vendor TEXT NOT NULL,
        hostname TEXT NOT NULL,
        data TEXT NOT NULL  -- JSON of Device.to_dict(); the columns above are copies for queries
    )""",
)

# Upsert: the row becomes what the caller gives. Merging (keeping the earliest first-seen) is the
# inventory's job, which has the device in memory; the store does not second-guess it.
_UPSERT = """INSERT INTO devices (mac, first_seen_usec, last_seen_usec, vendor, hostname, data)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (mac) DO UPDATE SET first_seen_usec = excluded.first_seen_usec,
        last_seen_usec = excluded.last_seen_usec, vendor = excluded.vendor,
        hostname = excluded.hostname, data = excluded.data"""


class CorruptStoreError(StoreError):
    """The file is not a usable netwatchd inventory: move it aside and start a new one."""


INVENTORY = FileKind("netwatchd inventory", StoreError, CorruptStoreError, _SCHEMA,
                     frozenset({"schema_version", "devices"}), SCHEMA_VERSION)


def move_aside(path: str, now: Optional[float] = None) -> str:
    """Renames a bad inventory to '<path>.corrupt-<time>' (kept for inspection); returns the new name.

    Its -wal and -shm files go with it, first: SQLite would otherwise replay the old WAL into
    the fresh database created at `path`.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(time.time() if now is None else now))
    target = f"{path}.corrupt-{stamp}"
    n = 1
    while os.path.lexists(target):
        target = f"{path}.corrupt-{stamp}.{n}"
        n += 1
    for suffix in ("-wal", "-shm"):
        if os.path.lexists(path + suffix):
            os.rename(path + suffix, target + suffix)
    os.rename(path, target)
    return target


class InventoryStore:
    """Devices in one SQLite file. Calls are serialized by a
    lock, so the daemon may save from a worker thread while its event loop reads."""

    def __init__(self, path: str, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str) -> "InventoryStore":
        """Opens (or creates) the inventory at `path`. Raises CorruptStoreError if the file is
        not a healthy netwatchd inventory, StoreError for any other reason it cannot be used."""
        # quick_check reads every page, which takes milliseconds for an inventory.
        return cls(path, open_private(INVENTORY, path, quick_check=True))

    def close(self) -> None:
        with self._lock:
            self._conn.close()  # the last connection to close checkpoints and removes the WAL

    def __enter__(self) -> "InventoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def load_devices(self) -> List[Device]:
        """Every stored device, ordered by MAC. A row whose JSON cannot be read is skipped with a
        warning: one bad row must not cost the rest of the inventory."""
        with self._lock:
            try:
                rows = self._conn.execute("SELECT mac, data FROM devices ORDER BY mac").fetchall()
            except sqlite3.Error as e:
                raise INVENTORY.sqlite_error(self.path, "cannot read devices", e) from e
        devices = []
        for mac, data in rows:
            try:
                devices.append(Device.from_dict(json.loads(data)))
            except (ValueError, TypeError) as e:
                log.warning("%s: skipped device %s, its record is unreadable: %s", self.path, mac, e)
        return devices

    def save_devices(self, devices: Iterable[Device]) -> int:
        """Inserts or replaces `devices` by MAC in one transaction; returns how many. Every MAC
        must be canonical ('aa:bb:cc:dd:ee:ff'); otherwise ValueError and nothing is written."""
        rows = [_device_row(d) for d in devices]
        with self._lock:
            self._in_transaction("save devices", lambda: self._conn.executemany(_UPSERT, rows))
        return len(rows)

    def pragmas(self) -> Dict[str, object]:
        """The settings this connection runs with, for logs and tests."""
        with self._lock:
            return {
                name: self._conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "busy_timeout", "journal_size_limit")
            }

    def _in_transaction(self, doing: str, work):
        """Runs `work` between BEGIN IMMEDIATE and COMMIT; rolls back if anything fails."""
        try:
            return in_transaction(self._conn, work)
        except sqlite3.Error as e:
            raise INVENTORY.sqlite_error(self.path, f"cannot {doing}", e) from e


_DEVICE_FIELDS = tuple(f.name for f in dataclasses.fields(Device))


def _json_default(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot store a {type(value).__name__} in a device record")


def _device_row(device: Device) -> Tuple[str, int, int, str, str, str]:
    if normalize_mac(device.mac) != device.mac:
        raise ValueError(f"device MAC not in canonical form: {device.mac!r}")
    # The same mapping as device.to_dict(), without its deep copy: dataclasses.asdict copies every
    # nested dict and list, which was 90% of the time of a 10k-device save. json walks them as they are.
    record = {name: getattr(device, name) for name in _DEVICE_FIELDS}
    data = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    return (device.mac, device.first_seen_usec, device.last_seen_usec, device.vendor, device.hostname, data)
