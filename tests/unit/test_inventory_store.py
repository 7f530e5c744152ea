"""The inventory in SQLite: round trip, upsert, WAL, SIGKILL safety, damaged files, permissions."""
import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from netwatchd.devices.model import COUNTER_NAMES, Device
from netwatchd.store.inventory import (
    SCHEMA_VERSION,
    CorruptStoreError,
    InventoryStore,
    StoreError,
    move_aside,
)
from tests.conftest import REPO


def make_device(n: int, generation: int = 0) -> Device:
    """A device with every field filled; `generation` changes what a later batch writes."""
    mac = "02:%02x:%02x:%02x:%02x:%02x" % tuple((n >> s) & 0xFF for s in (32, 24, 16, 8, 0))
    return Device(
        mac=mac,
        vendor="Apple, Inc.",
        randomized=True,
        first_seen_usec=1_700_000_000_000_000 + n,
        last_seen_usec=1_700_000_000_000_000 + n + generation,
        interface="eth0",
        vlan=n % 4095,
        hostname=f"host-{n}",
        hostname_source="dhcp",
        ipv4={f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}": 1_700_000_000_000_000},
        ipv6={f"fe80::{n:x}": 1, f"2001:db8::{n:x}": 2},
        counters={name: n + generation + i for i, name in enumerate(COUNTER_NAMES)},
        dns_names={f"n{k}.example.com": k + 1 for k in range(8)},
        http_hosts={"example.com": 3},
        tls_names={"www.example.org": 4},
        http_requests=[{"method": "GET", "host": "example.com", "path": f"/p/{generation}"}],
        peers=generation,
    )


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "state" / "inventory.db")


def test_round_trip_every_field(db_path):
    odd = Device(
        mac="aa:bb:cc:dd:ee:ff",
        vendor="Société Générale d'Équipement",
        hostname="ünïcödé-\u2603",
        counters={"tx_tcp_packets": 2**63 - 1},
        http_requests=[{"method": "GET", "host": "h", "path": "/a?b=\"c\"\n"}],
    )
    devices = [make_device(n) for n in range(50)] + [odd]
    with InventoryStore.open(db_path) as store:
        assert store.save_devices(devices) == len(devices)
    with InventoryStore.open(db_path) as store:
        loaded = store.load_devices()
    assert sorted(loaded, key=lambda d: d.mac) == sorted(devices, key=lambda d: d.mac)


def test_columns_and_json_mirror_the_device(db_path):
    device = make_device(7)
    with InventoryStore.open(db_path) as store:
        store.save_devices([device])
    conn = sqlite3.connect(db_path)
    row = conn.execute("SELECT mac, first_seen_usec, last_seen_usec, vendor, hostname, data FROM devices").fetchone()
    conn.close()
    assert row[:5] == (device.mac, device.first_seen_usec, device.last_seen_usec, device.vendor, device.hostname)
    assert json.loads(row[5]) == device.to_dict()


def test_upsert_replaces_by_mac_and_keeps_first_seen_as_given(db_path):
    with InventoryStore.open(db_path) as store:
        store.save_devices([make_device(1), make_device(2)])
        later = make_device(1, generation=500)
        later.hostname = "renamed"
        store.save_devices([later])
        by_mac = {d.mac: d for d in store.load_devices()}
    assert len(by_mac) == 2
    assert by_mac[later.mac] == later
    assert by_mac[later.mac].first_seen_usec == make_device(1).first_seen_usec
    assert by_mac[later.mac].last_seen_usec == make_device(1).first_seen_usec + 500


def test_unreadable_record_is_skipped_not_fatal(db_path, caplog):
    with InventoryStore.open(db_path) as store:
        store.save_devices([make_device(1), make_device(2)])
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE devices SET data = '{not json' WHERE mac = ?", (make_device(1).mac,))
    conn.commit()
    conn.close()
    with InventoryStore.open(db_path) as store:
        assert store.load_devices() == [make_device(2)]
    assert make_device(1).mac in caplog.text


def test_non_canonical_mac_writes_nothing(db_path):
    with InventoryStore.open(db_path) as store:
        bad = make_device(3)
        bad.mac = "AA:BB:CC:00:00:03"
        with pytest.raises(ValueError, match="canonical"):
            store.save_devices([make_device(1), bad])
        assert store.load_devices() == []


def test_wal_and_synchronous_normal(db_path):
    with InventoryStore.open(db_path) as store:
        store.save_devices([make_device(1)])
        pragmas = store.pragmas()
        assert pragmas["journal_mode"] == "wal"
        assert pragmas["synchronous"] == 1  # NORMAL
        # WAL mode is a property of the file: another connection sees it too.
        other = sqlite3.connect(db_path)
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()
        assert os.path.exists(db_path + "-wal")


def test_schema_version_recorded(db_path):
    InventoryStore.open(db_path).close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()


# --- permissions --------------------------------------------------------------------------------

def test_permissions_whatever_the_umask(tmp_path):
    path = tmp_path / "state" / "netwatchd" / "inventory.db"
    old = os.umask(0)  # the loosest umask: the modes must come from the code
    try:
        with InventoryStore.open(str(path)) as store:
            store.save_devices([make_device(1)])
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            for f in files:
                mode = stat.S_IMODE(os.stat(f).st_mode)
                assert mode & ~0o640 == 0, f"{f.name} has mode {mode:04o}"
    finally:
        os.umask(old)
    for d in (path.parent, path.parent.parent):
        mode = stat.S_IMODE(os.stat(d).st_mode)
        assert mode == 0o750, f"{d} has mode {mode:04o}"


def test_existing_loose_file_is_tightened(db_path):
    os.makedirs(os.path.dirname(db_path))
    open(db_path, "w").close()
    os.chmod(db_path, 0o666)
    InventoryStore.open(db_path).close()
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o640


def test_cannot_create_is_a_store_error_not_corruption(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = str(blocker / "inventory.db")  # a parent that is a file
    with pytest.raises(StoreError, match="cannot create") as info:
        InventoryStore.open(path)
    assert not isinstance(info.value, CorruptStoreError)
    assert info.value.path == path


# --- damaged files -------------------------------------------------------------------------------

def test_not_sqlite_is_corrupt_and_named(db_path):
    os.makedirs(os.path.dirname(db_path))
    with open(db_path, "w") as f:
        f.write("this is a text file, not a database\n" * 200)
    with pytest.raises(CorruptStoreError) as info:
        InventoryStore.open(db_path)
    assert db_path in str(info.value) and "not a database" in str(info.value)
    assert info.value.path == db_path


def test_damaged_pages_are_corrupt(db_path):
    with InventoryStore.open(db_path) as store:
        store.save_devices(make_device(n) for n in range(2000))
    size = os.path.getsize(db_path)
    with open(db_path, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xa5" * 16384)
    with pytest.raises(CorruptStoreError, match="malformed|damaged") as info:
        InventoryStore.open(db_path)
    assert db_path in str(info.value)


def test_someone_elses_database_is_not_ours(db_path):
    os.makedirs(os.path.dirname(db_path))
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE bookmarks (url TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptStoreError, match="not a netwatchd inventory.*bookmarks"):
        InventoryStore.open(db_path)


def test_newer_schema_is_refused_but_not_corrupt(db_path):
    InventoryStore.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer netwatchd") as info:
        InventoryStore.open(db_path)
    assert not isinstance(info.value, CorruptStoreError)


def test_move_aside_keeps_the_bad_file_and_a_fresh_store_opens(db_path):
    os.makedirs(os.path.dirname(db_path))
    garbage = b"garbage " * 1000
    with open(db_path, "wb") as f:
        f.write(garbage)
    with open(db_path + "-wal", "wb") as f:
        f.write(b"stale wal")
    with pytest.raises(CorruptStoreError):
        InventoryStore.open(db_path)
    moved = move_aside(db_path, now=1_700_000_000)
    assert moved.startswith(db_path + ".corrupt-")
    with open(moved, "rb") as f:
        assert f.read() == garbage
    with open(moved + "-wal", "rb") as f:
        assert f.read() == b"stale wal"
    assert not os.path.exists(db_path) and not os.path.exists(db_path + "-wal")
    # the same second again: a second name, nothing overwritten
    with open(db_path, "wb") as f:
        f.write(b"second")
    assert move_aside(db_path, now=1_700_000_000) == moved + ".1"
    with InventoryStore.open(db_path) as store:
        assert store.load_devices() == []


# --- SIGKILL -------------------------------------------------------------------------------------

BATCH = 300  # devices per batch: enough that a kill often lands inside a transaction
SHARED = 20  # devices every batch rewrites: an update half-applied would show here

WRITER = """
import sys
from netwatchd.store.inventory import InventoryStore
from tests.unit.test_inventory_store import batch

store = InventoryStore.open(sys.argv[1])
number, pause = int(sys.argv[2]), sys.argv[3] == "pause"
print("ready", flush=True)
while True:
    if pause:
        sys.stdin.readline()  # the parent kills us while we wait here, between batches
    store.save_devices(batch(number))
    print(number, flush=True)
    number += 1
"""


def batch(number: int):
    """Batch `number`: BATCH new devices of its own, plus SHARED devices every batch rewrites."""
    own = [make_device(number * BATCH + i + 1000, generation=number) for i in range(BATCH)]
    return own + [make_device(i, generation=number) for i in range(SHARED)]


def run_writer_and_kill(db_path, first: int, pause: bool, commits: int) -> int:
    """Starts a writer at batch `first`, SIGKILLs it after `commits` reported commits; returns the
    last batch it reported committed."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, db_path, str(first), "pause" if pause else "run"],
        cwd=str(REPO),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "ready\n"
        last = first - 1
        while last < first + commits - 1:
            if pause:
                child.stdin.write("go\n")
                child.stdin.flush()
            line = child.stdout.readline()
            assert line, "writer died"
            last = int(line)
        if not pause:
            # Reading its report leaves the writer at the start of its next batch, still building
            # rows; a random delay of up to about one batch lands the kill anywhere in the write.
            time.sleep(random.uniform(0, 0.015))
        os.kill(child.pid, signal.SIGKILL)
        # Commits it reported after our last read are in the pipe still.
        for line in child.stdout:
            last = int(line)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return last


def check_batches(db_path, upto: int) -> int:
    """Every batch up to `upto` is whole; the one after it (in flight at the kill) is whole or
    absent; none later exists. Returns the last batch found."""
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    with InventoryStore.open(db_path) as store:
        stored = {d.mac: d for d in store.load_devices()}
    in_flight = batch(upto + 1)[:BATCH]
    present = sum(d.mac in stored for d in in_flight)
    assert present in (0, BATCH), f"batch {upto + 1} half written: {present} of {BATCH} devices"
    last = upto + (present == BATCH)
    for number in range(last + 1):
        for device in batch(number)[:BATCH]:
            assert stored.get(device.mac) == device, f"batch {number} lost or damaged"
    shared = [stored[make_device(i).mac] for i in range(SHARED)]
    assert shared == [make_device(i, generation=last) for i in range(SHARED)]
    assert len(stored) == (last + 1) * BATCH + SHARED
    return last


@pytest.mark.parametrize("pause", [True, False], ids=["between-batches", "while-writing"])
def test_sigkill_loses_at_most_the_batch_in_flight(db_path, pause):
    os.makedirs(os.path.dirname(db_path))
    next_batch = 0
    for _round in range(4):  # each round recovers the previous round's WAL, then writes on
        reported = run_writer_and_kill(db_path, next_batch, pause, commits=4)
        last = check_batches(db_path, reported)
        if pause:
            assert last == reported  # killed between batches: nothing was in flight
        next_batch = last + 1


# --- speed ---------------------------------------------------------------------------------------

def test_save_10k_devices_in_one_batch(db_path):
    devices = [make_device(n) for n in range(10_000)]
    with InventoryStore.open(db_path) as store:
        start = time.perf_counter()
        store.save_devices(devices)
        elapsed = time.perf_counter() - start
        print(f"saved 10k devices in {elapsed:.3f} s")
        assert len(store.load_devices()) == 10_000
    assert elapsed < 2.0  # ~0.2-0.3 s here; headroom for a shared, busy machine
