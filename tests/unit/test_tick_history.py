"""The per-tick history in SQLite: round trip, pruning to `keep`, the buffer bound, bad files."""
import dataclasses
import os
import sqlite3
import stat

import pytest

from netwatchd.alerting.observation import TickObservation
from netwatchd.store.tick_history import CorruptHistoryError, HistoryError, TickHistory

T0 = 1_700_000_000_000_000


def tick(n: int) -> TickObservation:
    return TickObservation(
        time_usec=T0 + n * 1_000_000,
        device_connects={"02:00:00:00:00:01": n, "aa:bb:cc:dd:ee:ff": 3},
        device_new_ports={"02:00:00:00:00:01": n % 7},
        command_connects={"curl": n + 1},
        command_failed={"curl": n % 2},
        command_pids={"curl": [100 + n, 7]},
        new_devices=[{"mac": "02:00:00:00:00:09", "randomized": True, "vendor": "", "interface": "eth0",
                      "ipv4": ["10.0.0.9"], "ipv6": []}] if n == 3 else [],
        address_changes=[{"ip": "10.0.0.1", "old_mac": "aa:aa:aa:aa:aa:aa", "new_mac": "bb:bb:bb:bb:bb:bb",
                          "flip_flop": False}] if n == 4 else [],
        connection_starts=[["command:curl", "10.0.0.1", 443, "example.org", [T0 + n, T0 + n + 5]],
                           ["device:02:00:00:00:00:01", "fd00::1", 53, "", [T0 + 2 * n]]][: n % 3],
    )


def stored_times(path):
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT time_usec FROM ticks ORDER BY time_usec")]


def test_round_trip_oldest_first(tmp_path):
    path = str(tmp_path / "state" / "history.sqlite3")
    ticks = [tick(n) for n in range(10)]
    with TickHistory.open(path, keep=100) as h:
        for t in reversed(ticks[5:]):  # written out of order: read back by time
            h.record(t)
        h.flush()
        for t in ticks[:5]:
            h.record(t)
        assert list(h.read()) == ticks  # the buffer is written before reading
    with TickHistory.open_readonly(path) as h:
        assert list(h.read()) == ticks
        assert len(h) == 10


def test_a_tick_is_written_as_earlier_versions_wrote_it():
    """The text stored per tick is what replay reads back, from files older versions wrote too:
    the same JSON as the dataclass's own deep copy gave, without making that copy. (Those versions
    had no command_starts: asdict() of its numpy columns is no JSON, and empty it is not written.)"""
    import json
    for n in range(6):
        obs = tick(n)
        before = json.dumps({k: v for k, v in dataclasses.asdict(obs).items() if v and k != "command_starts"},
                            separators=(",", ":"), sort_keys=True)
        assert obs.to_json() == before
        assert TickObservation.from_json(obs.to_json()) == obs


def test_file_mode_and_wal(tmp_path):
    path = str(tmp_path / "history.sqlite3")
    old = os.umask(0)
    try:
        h = TickHistory.open(path, keep=10)
    finally:
        os.umask(old)
    h.record(tick(1))
    h.flush()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert h._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    h.close()


def test_reads_across_batches(tmp_path, monkeypatch):
    monkeypatch.setattr("netwatchd.store.tick_history.READ_BATCH", 7)
    path = str(tmp_path / "h.sqlite3")
    with TickHistory.open(path, keep=1000) as h:
        for n in range(50):
            h.record(tick(n))
    with TickHistory.open_readonly(path) as h:
        assert [o.time_usec for o in h.read()] == [tick(n).time_usec for n in range(50)]


@pytest.mark.parametrize("keep", [1, 5, 30])
def test_prunes_exactly_to_keep_newest(tmp_path, keep):
    path = str(tmp_path / "h.sqlite3")
    with TickHistory.open(path, keep=keep) as h:
        for n in range(12):
            h.record(tick(n))
            if n % 5 == 4:
                h.flush()
        h.flush()
        expected = [tick(n).time_usec for n in range(12)][-keep:]
        assert stored_times(path) == expected
        assert len(h) == min(keep, 12)


def test_lowering_keep_prunes_at_the_next_flush(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    with TickHistory.open(path, keep=100) as h:
        for n in range(20):
            h.record(tick(n))
        h.flush()
        h.keep = 3  # a reload with a smaller alerts.history_ticks
        h.flush()
        assert stored_times(path) == [tick(n).time_usec for n in (17, 18, 19)]
        h.keep = 0
        h.record(tick(20))
        h.flush()
        assert stored_times(path) == []


def busy_tick(n: int, pairs: int = 2000) -> TickObservation:
    """A busy host's tick: `pairs` distinct connection starts, about 110 KB of JSON."""
    return TickObservation(time_usec=T0 + n * 1_000_000, connection_starts=[
        ["command:worker", f"10.{n % 250}.{k >> 8}.{k & 255}", 40000 + k, "", [T0 + n * 1_000_000 + k]]
        for k in range(pairs)])


def file_pages_in_use(path) -> int:
    with sqlite3.connect(path) as conn:
        pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count",
                                                                                 "page_size"))
    return (pages - free) * size


def test_busy_ticks_are_bounded_by_bytes_too_the_oldest_going_first(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    one = len(busy_tick(0).to_json())
    assert 100_000 < one < 130_000
    with TickHistory.open(path, keep=86400, max_bytes=1 << 20) as h:
        for n in range(60):  # ~6.6 MB of ticks, one flush per tick (the buffer's 1 MB bound)
            h.record(busy_tick(n))
            h.flush()
        times = stored_times(path)
        assert times == [busy_tick(n).time_usec for n in range(60 - len(times), 60)]  # the newest, in order
        assert 6 <= len(times) <= 9, len(times)  # 1 MiB of ~115 KB ticks and their pages
        assert file_pages_in_use(path) <= 1 << 20
        assert len(h) == len(times)
        assert list(h.read())[-1] == busy_tick(59)
    assert os.path.getsize(path) <= 2 << 20  # freed pages were reused: the file stopped growing


def test_the_newest_tick_stays_even_when_alone_it_exceeds_the_bound(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    with TickHistory.open(path, keep=100, max_bytes=50_000) as h:
        for n in range(3):
            h.record(busy_tick(n))
            h.flush()
        assert stored_times(path) == [busy_tick(2).time_usec]
        h.max_bytes = 0  # alerts.history_max_mb cannot be 0; the class takes it as "no bound"
        for n in range(3, 6):
            h.record(busy_tick(n))
        h.flush()
        assert stored_times(path) == [busy_tick(n).time_usec for n in range(2, 6)]
        h.max_bytes = 300_000  # a reload lowering alerts.history_max_mb prunes at the next flush
        h.flush()
        assert stored_times(path) == [busy_tick(n).time_usec for n in range(4, 6)]


def test_keep_survives_reopen(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    with TickHistory.open(path, keep=10) as h:
        for n in range(8):
            h.record(tick(n))
    with TickHistory.open(path, keep=10) as h:
        for n in range(8, 16):
            h.record(tick(n))
    assert stored_times(path) == [tick(n).time_usec for n in range(6, 16)]


def test_a_tick_at_a_stored_time_replaces_it_and_pruning_stays_exact(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    with TickHistory.open(path, keep=5) as h:
        for n in range(5):
            h.record(tick(n))
        h.flush()
        again = dataclasses.replace(tick(3), command_connects={"after-a-clock-step": 1})
        h.record(again)  # the clock stepped back: same time as a stored tick
        h.record(tick(5))
        h.flush()
        assert len(h) == 5
        assert list(h.read()) == [tick(1), tick(2), again, tick(4), tick(5)]
    with TickHistory.open(path, keep=5) as h:
        assert len(h) == 5
        h.record(tick(6))
    assert stored_times(path) == [tick(n).time_usec for n in range(2, 7)]


def test_buffer_is_bounded_without_flush(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    h = TickHistory.open(path, keep=10_000, max_buffered=25)
    for n in range(100):
        h.record(tick(n))
        assert h.buffered < 25
    assert len(stored_times(path)) == 100  # written 25 at a time, nothing lost
    h.record(tick(100))
    assert h.buffered == 1
    h.close()
    assert len(stored_times(path)) == 101


def test_failed_write_in_record_drops_the_buffer_and_does_not_raise(tmp_path, caplog):
    path = str(tmp_path / "h.sqlite3")
    h = TickHistory.open(path, keep=100, max_buffered=3)
    h._conn.close()  # any sqlite3 error will do
    for n in range(7):
        h.record(tick(n))
    assert h.buffered == 1
    assert "dropped" in caplog.text
    with pytest.raises(HistoryError):
        h.flush()
    assert h.buffered == 0


def test_not_a_database(tmp_path):
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not sqlite at all, just some bytes" * 100)
    with pytest.raises(CorruptHistoryError, match="not a database"):
        TickHistory.open(str(path), keep=10)
    with pytest.raises(CorruptHistoryError, match="not a database"):
        TickHistory.open_readonly(str(path))


def test_damaged_pages(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    with TickHistory.open(path, keep=10_000) as h:
        for n in range(2000):
            h.record(tick(n))
    with open(path, "r+b") as f:  # keep the header, garble the pages after it
        f.seek(100)
        f.write(b"\xff" * (os.path.getsize(path) - 100))
    with pytest.raises(CorruptHistoryError):
        h = TickHistory.open(path, keep=10)
        h.record(tick(5000))
        h.flush()
        list(h.read())


def test_someone_elses_database(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(CorruptHistoryError, match="not a netwatchd tick history"):
        TickHistory.open(path, keep=10)
    with pytest.raises(CorruptHistoryError, match="not a netwatchd tick history"):
        TickHistory.open_readonly(path)


def test_missing_file_read_only_is_a_clear_error_and_creates_nothing(tmp_path):
    path = tmp_path / "h.sqlite3"
    with pytest.raises(HistoryError, match="no such file"):
        TickHistory.open_readonly(str(path))
    assert not path.exists()


def test_read_only_leaves_the_file_alone(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    with TickHistory.open(path, keep=10) as h:
        h.record(tick(1))
    before = os.stat(path).st_mtime_ns
    with TickHistory.open_readonly(path) as r:
        assert len(list(r.read())) == 1
        with pytest.raises(HistoryError, match="read-only"):
            r.flush()
    assert os.stat(path).st_mtime_ns == before


def test_reader_sees_what_a_live_writer_flushed(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    w = TickHistory.open(path, keep=100)
    w.record(tick(1))
    w.flush()
    w.record(tick(2))  # buffered, not yet written
    with TickHistory.open_readonly(path) as r:
        assert [o.time_usec for o in r.read()] == [tick(1).time_usec]
    w.close()


def test_big_ticks_are_written_after_a_megabyte_not_after_600_ticks(tmp_path):
    """A busy host's tick holds ~100k connection starts: the buffer is bounded in bytes too."""
    path = str(tmp_path / "h.sqlite3")
    h = TickHistory.open(path, keep=10_000)
    big = [["command:curl", f"10.0.{k >> 8}.{k & 255}", 443, "", [1, 2]] for k in range(5000)]  # ~230 KB of JSON
    for n in range(10):
        h.record(dataclasses.replace(tick(n), connection_starts=big))
        assert h.buffered <= 5  # 1 MiB / ~230 KB a tick
    assert len(stored_times(path)) >= 5
    h.close()
    assert len(stored_times(path)) == 10
