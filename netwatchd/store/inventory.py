"""The device inventory on disk: one SQLite file in the state directory.

Two tables keyed by MAC (schema version 2), because a device's parts change at different rates:

- device_metadata: what is known about the device (vendor, addresses, names, ...): the JSON of
  Device.to_dict() without `counters` and `last_seen_usec`, with first_seen_usec, vendor and
  hostname copied into columns for queries. Written when something in it changed.
- device_counters: the `counters` dict as JSON, and last_seen_usec. Written every store
  interval for every device that sent or received anything: under 1 KiB a device, however
  many names its metadata holds (4096 devices with full name lists: 46 ms for their counters,
  360 ms with their metadata, measured by tests/unit/test_inventory_store.py).

The JSON lets the dataclass grow without a schema change, and loading gives back exactly what
was saved. The caller batches: one save() call is one transaction, so a crash (even SIGKILL)
loses at most the batch being written, never half of one.

A file of schema version 1 (one `devices` table with the whole Device as JSON) is converted
in place when opened, in the transaction that opens it: all of it or none of it.

WAL with synchronous=NORMAL: a commit is in the WAL (the OS has it) before save() returns,
which survives the process dying; only a power cut can lose the last commits, and never
corrupts the file. That trade keeps a save to one write() and no fsync per batch.

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
from typing import Callable, Dict, Iterable, List, Optional, Tuple, TypeVar

from netwatchd.devices.model import Device, normalize_mac
from netwatchd.errors import StoreError
from netwatchd.store.sqlite import FileKind, in_transaction, open_private

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

_METADATA_TABLE = """CREATE TABLE IF NOT EXISTS device_metadata (
        mac TEXT PRIMARY KEY NOT NULL,
        first_seen_usec INTEGER NOT NULL,
        vendor TEXT NOT NULL,
        hostname TEXT NOT NULL,
        data TEXT NOT NULL  -- JSON of Device.to_dict() but counters and last_seen_usec
    )"""
_COUNTERS_TABLE = """CREATE TABLE IF NOT EXISTS device_counters (
        mac TEXT PRIMARY KEY NOT NULL,
        last_seen_usec INTEGER NOT NULL,
        counters TEXT NOT NULL  -- JSON of Device.counters
    )"""
_SCHEMA = ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", _METADATA_TABLE, _COUNTERS_TABLE)

# Upserts: the row becomes what the caller gives. Merging (keeping the earliest first-seen) is the
# inventory's job, which has the device in memory; the store does not second-guess it. ON CONFLICT
# DO UPDATE rewrites the row in place (INSERT OR REPLACE would delete and insert it again).
_UPSERT_METADATA = """INSERT INTO device_metadata (mac, first_seen_usec, vendor, hostname, data)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (mac) DO UPDATE SET first_seen_usec = excluded.first_seen_usec, vendor = excluded.vendor,
        hostname = excluded.hostname, data = excluded.data"""
_UPSERT_COUNTERS = """INSERT INTO device_counters (mac, last_seen_usec, counters) VALUES (?, ?, ?)
    ON CONFLICT (mac) DO UPDATE SET last_seen_usec = excluded.last_seen_usec, counters = excluded.counters"""
_SPLIT_OFF = ("counters", "last_seen_usec")  # the fields device_counters holds, not device_metadata


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    if version < 2:
        _split_v1_devices(conn)


def _split_v1_devices(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2: each `devices` row (the whole Device as JSON) becomes a metadata row and a
    counters row; then `devices` goes. Read in slices, so a large old file is not held in memory
    at once. A row whose JSON cannot be read is kept as it is, as metadata: loading warns about it
    and skips it, as it did before."""
    conn.execute(_METADATA_TABLE)
    conn.execute(_COUNTERS_TABLE)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'devices'").fetchone() is None:
        return
    rows = conn.execute("SELECT mac, first_seen_usec, last_seen_usec, vendor, hostname, data FROM devices")
    while True:
        chunk = rows.fetchmany(256)
        if not chunk:
            break
        metadata, counters = [], []
        for mac, first_seen, last_seen, vendor, hostname, data in chunk:
            try:
                record = _json_object(data)
            except ValueError:
                metadata.append((mac, first_seen, vendor, hostname, data))
                continue
            record.pop("last_seen_usec", None)  # the column holds the same
            counters.append((mac, last_seen, _dumps(record.pop("counters", {}))))
            metadata.append((mac, first_seen, vendor, hostname, _dumps(record)))
        conn.executemany(_UPSERT_METADATA, metadata)
        conn.executemany(_UPSERT_COUNTERS, counters)
    conn.execute("DROP TABLE devices")


class CorruptStoreError(StoreError):
    """The file is not a usable netwatchd inventory: move it aside and start a new one."""


INVENTORY = FileKind("netwatchd inventory", StoreError, CorruptStoreError, _SCHEMA,
                     frozenset({"schema_version", "device_metadata", "device_counters"}), SCHEMA_VERSION, _migrate)


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


T = TypeVar("T")


def open_or_start_anew(open_file: Callable[[str], T], path: str, what: str, meanwhile: str = "") -> Optional[T]:
    """`open_file(path)`; a corrupt file is kept aside (move_aside) and a new one started, so a bad
    file costs its contents, never the daemon; None (logged) when the file cannot be had for
    another reason (permissions, a newer schema, a full disk): the daemon runs without it."""
    try:
        try:
            return open_file(path)
        except CorruptStoreError as e:
            kept = move_aside(path)
            log.error("%s %s unusable (%s); kept it as %s and started anew", what, path, e.problem, kept)
            return open_file(path)
    except (StoreError, OSError) as e:
        log.error("%s not persisted this run%s: %s", what, f" ({meanwhile})" if meanwhile else "", e)
        return None


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
        """Every stored device, whole (its metadata and its counters), ordered by MAC. A device
        whose metadata cannot be read is skipped with a warning: one bad row must not cost the
        rest of the inventory. Metadata without counters gets empty counters (and its first-seen
        time as last seen); counters without metadata are no device and are left out."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT m.mac, m.data, c.last_seen_usec, c.counters FROM device_metadata AS m "
                    "LEFT JOIN device_counters AS c ON c.mac = m.mac ORDER BY m.mac").fetchall()
                (orphans,) = self._conn.execute(
                    "SELECT COUNT(*) FROM device_counters WHERE mac NOT IN (SELECT mac FROM device_metadata)").fetchone()
            except sqlite3.Error as e:
                raise INVENTORY.sqlite_error(self.path, "cannot read devices", e) from e
        if orphans:
            log.debug("%s: ignored the counters of %d device(s) without metadata", self.path, orphans)
        devices = []
        for mac, data, last_seen, counters in rows:
            try:
                record = _json_object(data)
                record["counters"] = self._counters(mac, counters)
                record["last_seen_usec"] = last_seen if last_seen is not None else record.get("first_seen_usec", 0)
                devices.append(Device.from_dict(record))
            except (ValueError, TypeError) as e:
                log.warning("%s: skipped device %s, its record is unreadable: %s", self.path, mac, e)
        return devices

    def _counters(self, mac: str, counters: Optional[str]) -> Dict[str, int]:
        """A device's stored counters; empty when it has none, or none that can be read (its
        metadata is worth more than a restart of its counts)."""
        if counters is None:
            return {}
        try:
            return _json_object(counters)
        except ValueError as e:
            log.warning("%s: the counters of device %s are unreadable, starting from zero: %s", self.path, mac, e)
            return {}

    def save(self, metadata: Iterable[Device] = (), counters: Iterable[Device] = (),
             deleted: Iterable[str] = ()) -> None:
        """One transaction: the metadata rows of `metadata` and the counter rows (counters,
        last_seen_usec) of `counters` inserted or replaced by MAC, and both rows of every MAC in
        `deleted` removed. A device may be in both lists. Deletions come first, so a MAC both
        deleted and saved (a device evicted, then seen again) ends up as saved. Every MAC must be
        canonical ('aa:bb:cc:dd:ee:ff'); otherwise ValueError and nothing is written."""
        metadata_rows = [_metadata_row(d) for d in metadata]
        counter_rows = [_counters_row(d) for d in counters]
        gone = [(_canonical(mac),) for mac in deleted]

        def work() -> None:
            if gone:
                self._conn.executemany("DELETE FROM device_metadata WHERE mac = ?", gone)
                self._conn.executemany("DELETE FROM device_counters WHERE mac = ?", gone)
            self._conn.executemany(_UPSERT_METADATA, metadata_rows)
            self._conn.executemany(_UPSERT_COUNTERS, counter_rows)

        if metadata_rows or counter_rows or gone:
            with self._lock:
                self._in_transaction("save devices", work)

    def save_devices(self, devices: Iterable[Device]) -> int:
        """Saves `devices` whole (metadata and counters) in one transaction; returns how many."""
        devices = list(devices)
        self.save(metadata=devices, counters=devices)
        return len(devices)

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


_METADATA_FIELDS = tuple(f.name for f in dataclasses.fields(Device) if f.name not in _SPLIT_OFF)


def _json_default(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot store a {type(value).__name__} in a device record")


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"a JSON {type(value).__name__}, not an object")
    return value


def _canonical(mac: str) -> str:
    if normalize_mac(mac) != mac:
        raise ValueError(f"device MAC not in canonical form: {mac!r}")
    return mac


def _metadata_row(device: Device) -> Tuple[str, int, str, str, str]:
    # The same mapping as device.to_dict(), without its deep copy: dataclasses.asdict copies every
    # nested dict and list, which was 90% of the time of a 10k-device save. json walks them as they are.
    record = {name: getattr(device, name) for name in _METADATA_FIELDS}
    return (_canonical(device.mac), device.first_seen_usec, device.vendor, device.hostname, _dumps(record))


def _counters_row(device: Device) -> Tuple[str, int, str]:
    return (_canonical(device.mac), device.last_seen_usec, _dumps(device.counters))
