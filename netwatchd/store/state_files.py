"""What alerting has learnt, kept in the state directory so that a restart neither re-learns nor
re-alerts:

  first_start       when netwatchd first ran here (the learning period counts from it)
  baselines.npz     the detector's baselines and cooldowns
  alerts.json       the recent alerts behind ListAlerts
  history.sqlite3   the per-tick history for `netwatchctl replay` (netwatchd.store.tick_history)

Each of the first three is written to a temporary file and renamed, so a SIGKILL leaves the old
or the new one. A damaged file costs what it held, never the daemon.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np

log = logging.getLogger(__name__)


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)


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


class AlertStateFiles:
    """first_start, baselines.npz and alerts.json in one state directory."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        os.makedirs(state_dir, mode=0o750, exist_ok=True)

    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def first_start_usec(self, now_usec: int, learning_period_sec: int) -> int:
        """When netwatchd first ran here; `now_usec` (and a log line) on the very first start."""
        path = self._path("first_start")
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            write_atomically(path, lambda tmp: open(tmp, "w").write(f"{now_usec}\n"))
            log.info("first start here: new devices are learnt without alerts for %d s", learning_period_sec)
            return now_usec

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
        write_atomically(self._path("baselines.npz"), lambda tmp: np.savez(open(tmp, "wb"), **baselines))
        write_atomically(self._path("alerts.json"), lambda tmp: json.dump(alerts, open(tmp, "w")))
