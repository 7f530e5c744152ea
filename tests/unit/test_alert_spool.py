"""The fleet's spool (netwatchd/store/alert_spool.py): what is owed to Alertmanager survives a
restart, a bad row or a bad file costs that row or file only, and the file is private."""
import json
import logging
import os
import sqlite3
import stat

import pytest

from netwatchd.api.fleet_alerts import FleetAlerts
from netwatchd.store.alert_spool import SPOOL_FILE, AlertSpool, open_spool

T0 = 1_700_000_000.0


def entries(*names):
    fa = FleetAlerts(100)
    out = []
    for name in names:
        e, _ = fa.add(f"mac={name}", {"alertname": "NetwatchdNewDevice", "mac": name},
                      {"summary": f"new device {name}", "observers": "host-a"}, T0, 600.0, "host-a")
        out.append(e)
    return out


@pytest.fixture
def spool(tmp_path):
    s = AlertSpool.open(str(tmp_path / SPOOL_FILE))
    yield s
    s.close()


def by_key(dicts):
    return {d["key"]: d for d in dicts}


def test_a_new_spool_is_empty(spool):
    assert spool.load() == []


def test_written_entries_load_back(spool):
    a, b = entries("m1", "m2")
    a.acked["http://am:9093"] = 1
    a.fired.add("http://am:9093")
    spool.write([a.to_json(), b.to_json()])
    assert by_key(spool.load()) == {a.key: a.to_json(), b.key: b.to_json()}


def test_a_changed_entry_replaces_its_row(spool):
    (a,) = entries("m1")
    spool.write([a.to_json()])
    a.version, a.resolved_at = 2, T0 + 600
    spool.write([a.to_json()])
    assert spool.load() == [a.to_json()]


def test_removed_keys_are_deleted(spool):
    a, b, c = entries("m1", "m2", "m3")
    spool.write([a.to_json(), b.to_json(), c.to_json()])
    spool.write([], removed=[a.key, c.key, "never spooled"])
    assert spool.load() == [b.to_json()]


def test_changes_and_removals_in_one_write(spool):
    a, b = entries("m1", "m2")
    spool.write([a.to_json()])
    spool.write([b.to_json()], removed=[a.key])
    assert spool.load() == [b.to_json()]


def test_nothing_to_write_is_no_write(spool):
    spool.write([], [])
    assert spool.load() == []


def test_entries_survive_a_reopen(tmp_path):
    path = str(tmp_path / SPOOL_FILE)
    a, b = entries("m1", "m2")
    first = AlertSpool.open(path)
    try:
        first.write([a.to_json(), b.to_json()])
    finally:
        first.close()
    again = AlertSpool.open(path)
    try:
        assert by_key(again.load()) == {a.key: a.to_json(), b.key: b.to_json()}
        assert again.bytes_used() > 0
    finally:
        again.close()


def insert_raw(path, key, text):
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("INSERT INTO alerts (key, entry) VALUES (?, ?)", (key, text))
    finally:
        conn.close()


@pytest.mark.parametrize("text", [
    "{not json",
    "[1, 2]",
    '"a string"',
    json.dumps({"key": "another key"}),
])
def test_an_unreadable_row_is_dropped_and_logged(spool, caplog, text):
    (a,) = entries("m1")
    spool.write([a.to_json()])
    insert_raw(spool.path, "broken", text)
    with caplog.at_level(logging.WARNING, logger="netwatchd.store.alert_spool"):
        assert spool.load() == [a.to_json()]
    said = [r.getMessage() for r in caplog.records if r.name == "netwatchd.store.alert_spool"]
    assert len(said) == 1
    assert said[0].startswith(f"{spool.path}: dropped an unreadable spooled alert")


def test_the_file_is_private_whatever_the_umask(tmp_path):
    for umask in (0o000, 0o022):
        path = str(tmp_path / f"u{umask:o}" / SPOOL_FILE)
        old = os.umask(umask)
        try:
            s = AlertSpool.open(path)
        finally:
            os.umask(old)
        try:
            s.write([entries("m1")[0].to_json()])
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
            if os.path.exists(path + "-wal"):
                assert stat.S_IMODE(os.stat(path + "-wal").st_mode) == 0o640
            assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o750
        finally:
            s.close()


def test_an_existing_file_readable_by_others_is_made_private(tmp_path):
    path = tmp_path / SPOOL_FILE
    path.write_bytes(b"")
    path.chmod(0o666)
    s = AlertSpool.open(str(path))
    s.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_open_spool_moves_a_garbage_file_aside_and_starts_anew(tmp_path, caplog):
    path = tmp_path / SPOOL_FILE
    garbage = b"this is no database\n" * 100
    path.write_bytes(garbage)
    with caplog.at_level(logging.ERROR, logger="netwatchd.store.alert_spool"):
        s = open_spool(str(tmp_path))
    assert s is not None
    try:
        kept = [p for p in tmp_path.iterdir() if p.name.startswith(SPOOL_FILE + ".corrupt-")]
        assert len(kept) == 1
        assert kept[0].read_bytes() == garbage, "kept for inspection, unchanged"
        assert s.load() == []
        (a,) = entries("m1")
        s.write([a.to_json()])
        assert s.load() == [a.to_json()]
        assert s.path == str(path)
    finally:
        s.close()
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "unusable" in said and str(kept[0]) in said


def test_open_spool_of_a_fresh_state_directory(tmp_path):
    state = tmp_path / "state" / "netwatchd"
    s = open_spool(str(state))
    assert s is not None
    try:
        assert s.path == str(state / SPOOL_FILE)
        assert s.load() == []
    finally:
        s.close()


def test_open_spool_where_no_file_can_be_made_is_none(tmp_path, caplog):
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("a file, not a directory\n")
    with caplog.at_level(logging.ERROR, logger="netwatchd.store.alert_spool"):
        assert open_spool(str(not_a_dir)) is None
    assert any("alerts wait in memory only" in r.getMessage() for r in caplog.records)
    assert not_a_dir.read_text() == "a file, not a directory\n"
