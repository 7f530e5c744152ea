"""State files (netwatchd/store/state_files.py): replaced whole and durably, never half-written, and a
first_start that a crash or a power cut left torn does not start the learning period again.

Times are injected and written out literally; file times are set with os.utime."""
import logging
import os

import numpy as np
import pytest

from netwatchd.store import state_files
from netwatchd.atomic_files import write_atomically
from netwatchd.store.state_files import AlertStateFiles

NOW = 1_760_000_000_000_000  # usec: 2025-10-09 08:53:20 UTC
HOUR = 3600 * 1_000_000
DAY = 24 * HOUR


def set_mtime(path, usec: int) -> None:
    os.utime(path, ns=(usec * 1000, usec * 1000))


def mtime_usec(path) -> int:
    return os.stat(path).st_mtime_ns // 1000


@pytest.fixture
def calls(monkeypatch):
    """os.fsync and os.replace as state_files calls them, in order: ("fsync", what the fd is),
    ("replace", src, dst)."""
    seen = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd):
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def spy_replace(src, dst):
        seen.append(("replace", str(src), str(dst)))
        replace(src, dst)

    monkeypatch.setattr(state_files.os, "fsync", spy_fsync)
    monkeypatch.setattr(state_files.os, "replace", spy_replace)
    return seen


# ------------------------------------------------------------------------ write_atomically
def test_write_goes_to_a_unique_temporary_file_fsynced_renamed_then_the_directory_fsynced(tmp_path, calls):
    target = tmp_path / "alerts.json"
    target.write_bytes(b"old")
    (tmp_path / "alerts.json.tmp").write_bytes(b"someone else's")  # the old fixed name: not ours to touch
    write_atomically(str(target), lambda f: f.write(b"[1, 2]"))
    write_atomically(str(target), lambda f: f.write(b"[3]"))

    assert target.read_bytes() == b"[3]"
    assert (tmp_path / "alerts.json.tmp").read_bytes() == b"someone else's"
    assert sorted(os.listdir(tmp_path)) == ["alerts.json", "alerts.json.tmp"]  # no temporary left
    first, second = calls[:3], calls[3:]
    for fsync_file, rename, fsync_dir in (first, second):
        tmp = rename[1]
        assert os.path.dirname(tmp) == str(tmp_path)
        assert os.path.basename(tmp).startswith(".alerts.json.") and tmp.endswith(".tmp")
        assert fsync_file == ("fsync", tmp)  # the file's data before it gets the name
        assert rename == ("replace", tmp, str(target))
        assert fsync_dir == ("fsync", str(tmp_path))  # then the rename itself
    assert first[1][1] != second[1][1]  # a unique name each time
    assert len(calls) == 6


@pytest.mark.parametrize("failure", ["write", "replace"])
def test_a_failure_leaves_the_target_as_it_was_and_no_temporary_file(tmp_path, failure):
    target = tmp_path / "baselines.npz"
    if failure == "write":
        target.write_bytes(b"old")

        def write(f):
            f.write(b"half of it")
            raise RuntimeError("disk on fire")
        with pytest.raises(RuntimeError, match="disk on fire"):
            write_atomically(str(target), write)
        assert target.read_bytes() == b"old"
    else:
        target.mkdir()  # a rename onto a directory fails
        with pytest.raises(IsADirectoryError):
            write_atomically(str(target), lambda f: f.write(b"new"))
        assert target.is_dir()
    assert os.listdir(tmp_path) == ["baselines.npz"]


def test_save_round_trips_baselines_and_alerts_through_the_atomic_writes(tmp_path):
    files = AlertStateFiles(str(tmp_path))
    files.save({"mean": np.array([1.5, 2.5]), "keys": np.array(["a", "b"])}, [{"id": "x1", "score": 7.0}])
    again = AlertStateFiles(str(tmp_path))
    loaded = again.load_baselines()
    assert loaded["mean"].tolist() == [1.5, 2.5] and loaded["keys"].tolist() == ["a", "b"]
    assert again.load_alerts() == [{"id": "x1", "score": 7.0}]
    assert sorted(os.listdir(tmp_path)) == ["alerts.json", "baselines.npz"]
    assert {oct(os.stat(tmp_path / n).st_mode & 0o777) for n in os.listdir(tmp_path)} == {"0o600"}


def test_temporary_files_an_interrupted_write_left_are_removed_at_start(tmp_path, caplog):
    for name in (".first_start.k2j4x9.tmp", ".baselines.npz.abcdef.tmp", "alerts.json.tmp",  # ours
                 "first_start", "other.tmp", ".inventory.sqlite3.abc.tmp"):  # not temporaries of ours
        (tmp_path / name).write_bytes(b"1")
    with caplog.at_level(logging.INFO, logger="netwatchd.store.state_files"):
        AlertStateFiles(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".inventory.sqlite3.abc.tmp", "first_start", "other.tmp"]
    assert ".first_start.k2j4x9.tmp" in caplog.text and "alerts.json.tmp" in caplog.text


# ------------------------------------------------------------------------ first_start
def test_the_very_first_start_is_now_and_the_file_says_so_in_content_and_time(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="netwatchd.store.state_files"):
        assert AlertStateFiles(str(tmp_path)).first_start_usec(NOW, 3600) == NOW
    assert (tmp_path / "first_start").read_bytes() == b"1760000000000000\n"
    assert mtime_usec(tmp_path / "first_start") == NOW
    assert "first start here" in caplog.text and "3600 s" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_readable_first_start_is_kept_as_it_is(tmp_path, caplog):
    (tmp_path / "first_start").write_bytes(b"1759990000000000\n")
    set_mtime(tmp_path / "first_start", NOW - HOUR)
    with caplog.at_level(logging.INFO, logger="netwatchd.store.state_files"):
        assert AlertStateFiles(str(tmp_path)).first_start_usec(NOW, 3600) == 1_759_990_000_000_000
    assert mtime_usec(tmp_path / "first_start") == NOW - HOUR  # not rewritten
    assert caplog.text == ""


@pytest.mark.parametrize("torn, problem", [
    (b"", "is empty"),
    (b"\n", "is empty"),
    (b"\0" * 17, "holds no time (17 bytes)"),  # the rename reached the disk, the data blocks did not
    (b"17600000\xff", "holds no time (9 bytes)"),
])
def test_a_torn_first_start_counts_from_its_own_modification_time(tmp_path, caplog, torn, problem):
    (tmp_path / "first_start").write_bytes(torn)
    set_mtime(tmp_path / "first_start", NOW - 2 * DAY)
    for name, age in (("baselines.npz", HOUR), ("alerts.json", HOUR), ("inventory.sqlite3", 10)):
        (tmp_path / name).write_bytes(b"x")
        set_mtime(tmp_path / name, NOW - age)
    with caplog.at_level(logging.INFO, logger="netwatchd.store.state_files"):
        got = AlertStateFiles(str(tmp_path)).first_start_usec(NOW, 3600)
    assert got == NOW - 2 * DAY  # 2025-10-07 08:53:20 UTC: the learning period is long over
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{tmp_path / 'first_start'} {problem}: the learning period counts from "
                        "2025-10-07 08:53:20 UTC (the file's own modification time), not from this start; "
                        "written back"]
    assert "first start here" not in caplog.text
    # written back, content and time: the next start reads it and says nothing
    assert (tmp_path / "first_start").read_bytes() == b"1759827200000000\n"
    assert mtime_usec(tmp_path / "first_start") == NOW - 2 * DAY
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="netwatchd.store.state_files"):
        assert AlertStateFiles(str(tmp_path)).first_start_usec(NOW + HOUR, 3600) == NOW - 2 * DAY
    assert caplog.text == ""


def test_an_older_state_file_is_better_evidence_than_a_rewritten_first_start(tmp_path, caplog):
    """first_start torn on a later write (its mtime is then that write's): the inventory has been
    here longer, so its time is the nearer one to the first start."""
    (tmp_path / "first_start").write_bytes(b"")
    set_mtime(tmp_path / "first_start", NOW - HOUR)
    (tmp_path / "patterns.sqlite3").write_bytes(b"x")
    set_mtime(tmp_path / "patterns.sqlite3", NOW - 3 * DAY)
    (tmp_path / "unrelated.log").write_bytes(b"x")  # not a file of netwatchd's: no evidence
    set_mtime(tmp_path / "unrelated.log", NOW - 300 * DAY)
    with caplog.at_level(logging.WARNING, logger="netwatchd.store.state_files"):
        assert AlertStateFiles(str(tmp_path)).first_start_usec(NOW, 3600) == NOW - 3 * DAY
    assert "2025-10-06 08:53:20 UTC (modification time of patterns.sqlite3)" in caplog.text


def test_an_unreadable_first_start_that_cannot_be_rewritten_still_does_not_restart_learning(tmp_path, caplog):
    (tmp_path / "first_start").mkdir()  # open() fails (EISDIR), and so does the rename onto it
    set_mtime(tmp_path / "first_start", NOW - DAY)
    with caplog.at_level(logging.WARNING, logger="netwatchd.store.state_files"):
        assert AlertStateFiles(str(tmp_path)).first_start_usec(NOW, 3600) == NOW - DAY
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[0] == ("WARNING", f"{tmp_path / 'first_start'} cannot be read: Is a directory: the learning "
                                      "period counts from 2025-10-08 08:53:20 UTC (the file's own modification "
                                      "time), not from this start; written back")
    assert messages[1][0] == "ERROR" and messages[1][1].startswith(f"cannot write {tmp_path / 'first_start'} back")
    assert os.listdir(tmp_path) == ["first_start"]  # no temporary file left


def test_state_files_newer_than_the_clock_give_now(tmp_path):
    """The clock went back after the files were written: never a first start in the future."""
    (tmp_path / "first_start").write_bytes(b"")
    set_mtime(tmp_path / "first_start", NOW + DAY)
    assert AlertStateFiles(str(tmp_path)).first_start_usec(NOW, 3600) == NOW
    assert (tmp_path / "first_start").read_bytes() == b"1760000000000000\n"
