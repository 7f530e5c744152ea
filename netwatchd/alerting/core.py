"""The alerting core (pure): one tick's observation in, that tick's alerts out.

The one composition of the detector (alerting/detector.py: new devices, address moves, MAC
floods, fan-out, connect rates), the beacon tracker (alerting/beacons.py) and the learning
window after the very first start. The daemon runs it inside AlertPipeline (alerting/pipeline.py,
which adds the saved state, the tick history and the sinks around it) and `netwatchctl replay`
runs it over the recorded history (alerting/replay.py), so replay raises what the daemon would
have raised: there is no second wiring to drift from this one.

No I/O and no clock: time is the observation's own; what was learnt goes out as arrays
(`state`) and comes back (`load_state`) through whoever keeps it.
"""
from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np

from netwatchd.alerting.alerts import Alert, AlertIds
from netwatchd.alerting.beacons import BeaconTracker
from netwatchd.alerting.detector import Detector
from netwatchd.alerting.observation import TickObservation
from netwatchd.config import AlertsConfig, BeaconsConfig


class AlertingCore:
    """Detector + beacons + learning window.

    `first_start_usec`: when netwatchd first ran on this state (the daemon: the state's
    first_start; a replay: its first recorded tick); new devices, fan-out and MAC floods are
    learnt without alerts until `learning_period_sec` after it. `now_usec` seeds the alert ids.
    """

    def __init__(self, cfg: AlertsConfig, beacons: BeaconsConfig, first_start_usec: int, now_usec: int):
        self.cfg = cfg
        self.first_start_usec = first_start_usec
        self.detector = Detector(cfg, AlertIds(now_usec), self.learning_until_usec)
        self.beacons = BeaconTracker(beacons)

    @property
    def learning_until_usec(self) -> int:
        """The end of the learning period: the one place it is computed."""
        return self.first_start_usec + self.cfg.learning_period_sec * 1_000_000

    @property
    def ids(self) -> AlertIds:
        return self.detector.ids

    def learning(self, now_usec: int) -> bool:
        return self.detector.learning(now_usec)

    def tick(self, obs: TickObservation) -> List[Alert]:
        """One tick: what every part raised, the detector's first, then the beacons'."""
        return self.detector.tick(obs) + self.beacons.tick(
            obs.connection_starts, obs.time_usec, self.detector.ids, self.cfg.enabled, self.cfg.cooldown_sec)

    def reconfigure(self, cfg: AlertsConfig, beacons: BeaconsConfig = None) -> None:
        """New settings from the next tick; what was learnt stays (the learning window follows a
        changed learning_period_sec from the same first start)."""
        if beacons is not None:
            self.beacons.reconfigure(beacons)
        self.cfg = cfg
        self.detector.reconfigure(cfg, self.learning_until_usec)

    # -- what was learnt ----------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        """Baselines, cooldowns, address moves, floods and seasonal profiles, as arrays."""
        return self.detector.state()

    def load_state(self, state: Dict[str, np.ndarray]) -> None:
        self.detector.load_state(state)

    def remember(self, alerts: Iterable[Alert]) -> None:
        """Alerts raised before (a restored alert log): beacons already reported stay quiet for
        their cooldown."""
        self.beacons.remember_alerts(alerts)

    def dropped(self) -> Dict[str, int]:
        """What the bounded tables dropped since the start: baseline keys (idle, pushed out by
        alerts.max_baseline_keys, refused in a tick beyond it) and beacon pairs (beacons.max_pairs)."""
        counts = self.detector.pruned_counts()
        total = lambda what: sum(n for key, n in counts.items() if key.endswith("." + what))  # noqa: E731
        return {"baseline_keys_pruned": total("pruned"), "baseline_keys_evicted": total("evicted"),
                "baseline_keys_refused": total("refused"), "beacon_pairs_dropped": self.beacons.dropped}
