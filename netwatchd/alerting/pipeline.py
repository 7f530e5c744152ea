"""Alerting for the daemon: observation -> detector -> alert log -> sinks (journald, D-Bus).

No file I/O here: what was learnt is loaded from and saved to a state object (in the daemon,
netwatchd.store.state_files.AlertStateFiles), and each tick is recorded into a history object
(netwatchd.store.tick_history.TickHistory) when one is given.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List

from netwatchd.alerting.alerts import Alert, AlertIds, AlertLog
from netwatchd.alerting.beacons import BeaconTracker
from netwatchd.alerting.detector import Detector
from netwatchd.alerting.observation import TickObservation
from netwatchd.config import AlertsConfig, BeaconsConfig

log = logging.getLogger(__name__)


def restore_alerts(records: List[dict]) -> List[Alert]:
    """Alerts from their saved dicts; a record that does not parse is dropped, not fatal."""
    alerts = []
    for record in records:
        try:
            alerts.append(Alert.from_dict(record))
        except (KeyError, TypeError, ValueError) as e:
            log.error("dropping a saved alert that cannot be read (%s): %r", e, record)
    return alerts


class AlertPipeline:
    def __init__(self, cfg: AlertsConfig, state, sinks: List = (), history=None,
                 clock: Callable[[], float] = time.time, beacons: BeaconsConfig = BeaconsConfig()):
        self.cfg = cfg
        self.state = state
        self.sinks = list(sinks)
        self.history = history
        self.clock = clock
        now_usec = int(clock() * 1e6)
        self.first_start_usec = state.first_start_usec(now_usec, cfg.learning_period_sec)
        self.detector = Detector(cfg, AlertIds(now_usec), self._learning_until())
        baselines = state.load_baselines()
        if baselines is not None:
            try:
                self.detector.load_state(baselines)
            except Exception as e:  # saved by another version: learn again rather than fail
                log.error("cannot use the saved baselines (%s): learning baselines again", e)
        self.log = AlertLog(cfg.max_alerts, restore_alerts(state.load_alerts()))
        self.beacons = BeaconTracker(beacons)
        self.beacons.remember_alerts(self.log.all())

    def _learning_until(self) -> int:
        return self.first_start_usec + self.cfg.learning_period_sec * 1_000_000

    def save(self) -> None:
        self.state.save(self.detector.state(), [a.to_dict() for a in self.log.all()])
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
    def reconfigure(self, cfg: AlertsConfig, beacons: BeaconsConfig = None) -> None:
        if beacons is not None:
            self.beacons.reconfigure(beacons)
        self.cfg = cfg
        self.detector.reconfigure(cfg, self._learning_until())
        self.log.resize(cfg.max_alerts)
        if self.history is not None:
            self.history.keep = cfg.history_ticks
            self.history.max_bytes = cfg.history_max_bytes

    def dropped(self) -> Dict[str, int]:
        """What alerting's bounded tables dropped since the start (D-Bus Dropped): baseline keys
        (idle, pushed out by alerts.max_baseline_keys, refused in a tick beyond it) and beacon
        pairs (beacons.max_pairs)."""
        counts = self.detector.pruned_counts()
        total = lambda what: sum(n for key, n in counts.items() if key.endswith("." + what))  # noqa: E731
        return {"baseline_keys_pruned": total("pruned"), "baseline_keys_evicted": total("evicted"),
                "baseline_keys_refused": total("refused"), "beacon_pairs_dropped": self.beacons.dropped}

    def learning(self) -> bool:
        return self.detector.learning(int(self.clock() * 1e6))

    def tick(self, obs: TickObservation) -> List[Alert]:
        if self.history is not None:
            self.history.record(obs)
        alerts = self.detector.tick(obs) + self.beacons.tick(
            obs.connection_starts, obs.time_usec, self.detector.ids, self.cfg.enabled, self.cfg.cooldown_sec)
        for alert in alerts:
            self.log.add(alert)
            for sink in self.sinks:
                try:
                    sink.emit(alert)
                except Exception:  # a sink that fails must not lose the others
                    log.exception("alert sink %s failed", type(sink).__name__)
        return alerts
