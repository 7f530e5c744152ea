"""Alerting for the daemon: observation -> AlertingCore -> alert log -> sinks (journald, D-Bus).

No file I/O here: what was learnt is loaded from and saved to a state object (in the daemon,
netwatchd.store.state_files.AlertStateFiles), and each tick is recorded into a history object
(netwatchd.store.tick_history.TickHistory) when one is given, and into the web UI's series
(netwatchd.alerting.tick_series.TickSeries) when one is given.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional

from netwatchd.alerting.alerts import Alert, AlertLog
from netwatchd.alerting.core import AlertingCore
from netwatchd.alerting.detector import fan_out_values
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.tick_series import TickSeries
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
    """The daemon's alerting: the AlertingCore (alerting/core.py, the same object replay runs)
    with what the daemon keeps around it: the saved state (loaded at start, saved by `save`),
    the tick history for replay, the alert log behind ListAlerts, and the sinks."""

    def __init__(self, cfg: AlertsConfig, state, sinks: List = (), history=None,
                 clock: Callable[[], float] = time.time, beacons: BeaconsConfig = BeaconsConfig(),
                 series: Optional[TickSeries] = None):
        self.state = state
        self.series = series  # the web UI's charts (alerting/tick_series.py), when it runs
        self.sinks = list(sinks)
        self.history = history
        self.clock = clock
        now_usec = int(clock() * 1e6)
        self.core = AlertingCore(cfg, beacons, state.first_start_usec(now_usec, cfg.learning_period_sec), now_usec)
        baselines = state.load_baselines()
        if baselines is not None:
            try:
                self.core.load_state(baselines)
            except Exception as e:  # saved by another version: learn again rather than fail
                log.error("cannot use the saved baselines (%s): learning baselines again", e)
        self.log = AlertLog(cfg.max_alerts, restore_alerts(state.load_alerts()))
        self.core.remember(self.log.all())

    @property
    def cfg(self) -> AlertsConfig:
        return self.core.cfg

    @property
    def detector(self):
        return self.core.detector

    @property
    def beacons(self):
        return self.core.beacons

    def save(self) -> None:
        self.state.save(self.core.state(), [a.to_dict() for a in self.log.all()])
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
        self.core.reconfigure(cfg, beacons)
        self.log.resize(cfg.max_alerts)
        if self.history is not None:
            self.history.keep = cfg.history_ticks
            self.history.max_bytes = cfg.history_max_bytes

    def dropped(self) -> Dict[str, int]:
        """What alerting's bounded tables dropped since the start (D-Bus Dropped)."""
        return self.core.dropped()

    def learning(self) -> bool:
        return self.core.learning(int(self.clock() * 1e6))

    def tick(self, obs: TickObservation) -> List[Alert]:
        if self.history is not None:
            self.history.record(obs)
        alerts = self.core.tick(obs)
        if self.series is not None:
            self._record_series(obs, alerts)
        for alert in alerts:
            self.log.add(alert)
            for sink in self.sinks:
                try:
                    sink.emit(alert)
                except Exception:  # a sink that fails must not lose the others
                    log.exception("alert sink %s failed", type(sink).__name__)
        return alerts

    def _record_series(self, obs: TickObservation, alerts: List[Alert]) -> None:
        tables = self.detector.tables

        def stats(table: str, key: str):
            try:
                mean, std, _ = tables[table].stats(key)
            except KeyError:  # pruned, or never a key (a value of 0)
                return None
            return mean, std

        values = {"device_connects": obs.device_connects, "device_fan_out": fan_out_values(obs),
                  "command_connects": obs.command_connects}
        totals = {"connects": sum(obs.command_connects.values()), "failed": sum(obs.command_failed.values()),
                  "new_devices": len(obs.new_devices), "alerts": len(alerts)}
        self.series.record(obs.time_usec, values, stats, totals)
