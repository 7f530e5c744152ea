"""What alerting has learnt, kept in the state directory so that a restart neither re-learns nor
re-alerts:

  first_start       when netwatchd first ran here (the learning period counts from it)
  baselines.npz     the detector's baselines and cooldowns
  alerts.json       the recent alerts behind ListAlerts
  history.sqlite3   the per-tick history for `netwatchctl replay` (netwatchd.store.tick_history)

Each of the first three is replaced whole (write_atomically): a SIGKILL or a power cut leaves the
old or the new one, never a mix. A damaged file costs what it held, never the daemon -- except
first_start, whose loss would start the learning period again: when it does not parse, the
learning period counts from when it was written, as the state files' times tell
(first_start_usec).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

import numpy as np

from netwatchd.atomic_files import TEMP_SUFFIX, remove_stale_temporaries, write_atomically

log = logging.getLogger(__name__)

FIRST_START = "first_start"


def history_path(state_dir: str) -> str:
    return os.path.join(state_dir, "history.sqlite3")


def open_history(state_dir: str, keep: int, max_bytes: int) -> Optional[object]:
    """The per-tick history for `netwatchctl replay`, when history is kept at all."""
    if keep <= 0:
        return None
    from netwatchd.store.tick_history import HistoryError, TickHistory

    try:
        return TickHistory.open(history_path(state_dir), keep, max_bytes=max_bytes)
    except HistoryError as e:
        log.error("running without a replay history: %s", e)
        return None


# netwatchd's own files in the state directory, each written only after netwatchd first ran there:
# the oldest one's modification time is the nearest evidence of the first start there is when
# first_start itself is unreadable (inventory.sqlite3: device_setup.INVENTORY_FILE;
# patterns.sqlite3: store.patterns.PATTERNS_FILE).
EVIDENCE_FILES = (FIRST_START, "baselines.npz", "alerts.json", "history.sqlite3", "inventory.sqlite3",
                  "patterns.sqlite3")


def _utc(usec: int) -> str:
    return datetime.datetime.fromtimestamp(usec / 1e6, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class AlertStateFiles:
    """first_start, baselines.npz and alerts.json in one state directory."""

    NAMES = (FIRST_START, "baselines.npz", "alerts.json")

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        # a SIGKILL during a write leaves its temporary file; an older version's was NAME.tmp
        stale = remove_stale_temporaries(state_dir, self.NAMES)
        stale += [old for old in (f"{n}{TEMP_SUFFIX}" for n in self.NAMES) if self._unlink(old)]
        if stale:
            log.info("removed temporary files an interrupted write left in %s: %s", state_dir, ", ".join(stale))

    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def _unlink(self, name: str) -> bool:
        try:
            os.unlink(self._path(name))
            return True
        except OSError:
            return False

    def first_start_usec(self, now_usec: int, learning_period_sec: int) -> int:
        """When netwatchd first ran here; `now_usec` (and a log line) on the very first start.

        A first_start that exists but cannot be read or does not hold a time (a write torn by a
        crash or a power cut: empty, or cut short) does not start the learning period again: it
        counts from the oldest modification time among netwatchd's state files (first_start's
        own is when it was written: at the first start), logged once and written back."""
        path = self._path(FIRST_START)
        try:
            with open(path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            self._write_first_start(now_usec)
            log.info("first start here: new devices are learnt without alerts for %d s", learning_period_sec)
            return now_usec
        except OSError as e:
            problem = f"cannot be read: {e.strerror or e}"
        else:
            try:
                value = int(text.strip())
            except ValueError:
                value = 0
            if value > 0:
                return value
            problem = "is empty" if not text.strip() else f"holds no time ({len(text)} bytes)"
        when, source = self.first_start_evidence(now_usec)
        log.warning("%s %s: the learning period counts from %s (%s), not from this start; "
                    "written back", path, problem, _utc(when), source)
        try:
            self._write_first_start(when)
        except OSError as e:
            log.error("cannot write %s back: %s", path, e)
        return when

    def first_start_evidence(self, now_usec: int) -> Tuple[int, str]:
        """The oldest modification time among EVIDENCE_FILES, and where it came from (never later
        than `now_usec`)."""
        best = (now_usec, "now: no state file is older")
        for name in EVIDENCE_FILES:
            try:
                st = os.stat(self._path(name))
            except OSError:
                continue
            mtime = st.st_mtime_ns // 1000
            if mtime < best[0]:
                own = "the file's own modification time" if name == FIRST_START else f"modification time of {name}"
                best = (mtime, own)
        return best

    def _write_first_start(self, usec: int) -> None:
        """The time, and the same time as the file's modification time: if the file is ever torn
        again, its mtime still says when netwatchd first ran."""
        def write(f: BinaryIO) -> None:
            f.write(b"%d\n" % usec)
            f.flush()
            os.utime(f.fileno(), ns=(usec * 1000, usec * 1000))  # before the fsync: durable too

        write_atomically(self._path(FIRST_START), write)

    def load_baselines(self) -> Optional[Dict[str, np.ndarray]]:
        path = self._path("baselines.npz")
        if not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception as e:  # a damaged file costs what was learnt, never the daemon
            log.error("cannot read %s (%s): learning baselines again", path, e)
            return None

    def load_alerts(self) -> List[Dict[str, Any]]:
        path = self._path("alerts.json")
        try:
            with open(path) as f:
                records = json.load(f)
            if not isinstance(records, list):
                raise ValueError("not a list of alerts")
            return records
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            log.error("cannot read %s (%s): starting with no recent alerts", path, e)
            return []

    def save(self, baselines: Dict[str, np.ndarray], alerts: List[Dict[str, Any]]) -> None:
        write_atomically(self._path("baselines.npz"), lambda f: np.savez(f, **baselines))
        write_atomically(self._path("alerts.json"), lambda f: f.write(json.dumps(alerts).encode()))
