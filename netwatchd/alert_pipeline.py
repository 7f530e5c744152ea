"""Alerting for the daemon: observation -> detector -> alert log -> sinks (journald, D-Bus),
with what was learnt kept in the state directory so a restart neither re-learns nor re-alerts.

Files in the state directory:
  first_start       when netwatchd first ran here (the learning period counts from it)
  baselines.npz     the detector's baselines and cooldowns
  alerts.json       the recent alerts behind ListAlerts
Each is written to a temporary file and renamed, so a SIGKILL leaves the old or the new one.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, List, Optional

import numpy as np

from .alerts import Alert, AlertIds, AlertLog
from .config import AlertsConfig
from .detector import Detector
from .observation import TickObservation

log = logging.getLogger(__name__)


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)


class AlertPipeline:
    def __init__(self, cfg: AlertsConfig, state_dir: str, sinks: List = (), history=None,
                 clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.state_dir = state_dir
        self.sinks = list(sinks)
        self.history = history
        self.clock = clock
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        now_usec = int(clock() * 1e6)
        self.first_start_usec = self._first_start(now_usec)
        self.detector = Detector(cfg, AlertIds(now_usec), self._learning_until())
        self._load_baselines()
        self.log = AlertLog(cfg.max_alerts, self._load_alerts())

    # -- state -------------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def _first_start(self, now_usec: int) -> int:
        path = self._path("first_start")
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            _write_atomically(path, lambda tmp: open(tmp, "w").write(f"{now_usec}\n"))
            log.info("first start here: new devices are learnt without alerts for %d s", self.cfg.learning_period_sec)
            return now_usec

    def _learning_until(self) -> int:
        return self.first_start_usec + self.cfg.learning_period_sec * 1_000_000

    def _load_baselines(self) -> None:
        path = self._path("baselines.npz")
        if not os.path.exists(path):
            return
        try:
            with np.load(path, allow_pickle=False) as data:
                self.detector.load_state({k: data[k] for k in data.files})
        except Exception as e:  # a damaged file costs what was learnt, never the daemon
            log.error("cannot read %s (%s): learning baselines again", path, e)

    def _load_alerts(self) -> List[Alert]:
        path = self._path("alerts.json")
        try:
            with open(path) as f:
                return [Alert.from_dict(d) for d in json.load(f)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("cannot read %s (%s): starting with no recent alerts", path, e)
            return []

    def save(self) -> None:
        _write_atomically(self._path("baselines.npz"),
                          lambda tmp: np.savez(open(tmp, "wb"), **self.detector.state()))
        _write_atomically(self._path("alerts.json"),
                          lambda tmp: json.dump([a.to_dict() for a in self.log.all()], open(tmp, "w")))
        if self.history is not None:
            try:
                self.history.flush()
            except Exception as e:  # HistoryError: the replay history loses this batch, nothing else
                log.error("cannot write the tick history: %s", e)

    def close(self) -> None:
        """At stop: what was learnt, and the last ticks of history."""
        self.save()
        if self.history is not None:
            self.history.close()

    # -- work --------------------------------------------------------------------------------
    def reconfigure(self, cfg: AlertsConfig) -> None:
        self.cfg = cfg
        self.detector.reconfigure(cfg, self._learning_until())
        self.log.resize(cfg.max_alerts)
        if self.history is not None:
            self.history.keep = cfg.history_ticks

    def learning(self) -> bool:
        return self.detector.learning(int(self.clock() * 1e6))

    def tick(self, obs: TickObservation) -> List[Alert]:
        if self.history is not None:
            self.history.record(obs)
        alerts = self.detector.tick(obs)
        for alert in alerts:
            self.log.add(alert)
            for sink in self.sinks:
                try:
                    sink.emit(alert)
                except Exception:  # a sink that fails must not lose the others
                    log.exception("alert sink %s failed", type(sink).__name__)
        return alerts


def history_path(state_dir: str) -> str:
    return os.path.join(state_dir, "history.sqlite3")


def open_history(state_dir: str, keep: int) -> Optional[object]:
    """The per-tick history for `netwatchctl replay`, when history is kept at all."""
    if keep <= 0:
        return None
    from .tick_history import HistoryError, TickHistory

    try:
        return TickHistory.open(history_path(state_dir), keep)
    except HistoryError as e:
        log.error("running without a replay history: %s", e)
        return None
