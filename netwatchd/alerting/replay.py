"""What-if replay (pure): a fresh detector with a given config over recorded ticks.

The detector starts with nothing learnt, as on a first start: baselines warm up over the first
`warmup_ticks` recorded ticks and the learning period for new devices counts from the first
recorded tick. Replaying the same ticks with another config shows which alerts that config
would have raised, before it is applied to the running daemon.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List

from netwatchd.alerting.alerts import Alert, AlertIds
from netwatchd.alerting.beacons import BeaconTracker
from netwatchd.config import AlertsConfig, BeaconsConfig
from netwatchd.alerting.detector import Detector
from netwatchd.alerting.observation import TickObservation


@dataclass
class ReplaySpan:
    """What a replay went over: how many ticks, from when to when."""

    ticks: int = 0
    first_usec: int = 0
    last_usec: int = 0

    def count(self, observations: Iterable[TickObservation]) -> Iterator[TickObservation]:
        for obs in observations:
            if self.ticks == 0:
                self.first_usec = obs.time_usec
            self.last_usec = obs.time_usec
            self.ticks += 1
            yield obs


def replay(observations: Iterable[TickObservation], cfg: AlertsConfig,
           beacons: BeaconsConfig = BeaconsConfig()) -> List[Alert]:
    """The alerts a fresh Detector with `cfg` (and a fresh beacon tracker with `beacons`)
    raises over `observations` (oldest first)."""
    detector = None
    tracker = BeaconTracker(beacons)
    alerts: List[Alert] = []
    for obs in observations:
        if detector is None:
            start = obs.time_usec
            detector = Detector(cfg, AlertIds(start), start + cfg.learning_period_sec * 1_000_000)
        alerts += detector.tick(obs)
        alerts += tracker.tick(obs.connection_starts, obs.time_usec, detector.ids, cfg.enabled, cfg.cooldown_sec)
    return alerts


@dataclass
class ReplaySummary:
    ticks: int
    first_usec: int
    last_usec: int
    alerts_per_kind: Dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, span: ReplaySpan, alerts: List[Alert]) -> "ReplaySummary":
        return cls(span.ticks, span.first_usec, span.last_usec, dict(sorted(Counter(a.kind for a in alerts).items())))

    @property
    def alerts(self) -> int:
        return sum(self.alerts_per_kind.values())

    def to_dict(self) -> Dict:
        return {"ticks": self.ticks, "first_usec": self.first_usec, "last_usec": self.last_usec,
                "span_sec": round((self.last_usec - self.first_usec) / 1e6, 3), "alerts": self.alerts,
                "alerts_per_kind": dict(self.alerts_per_kind)}

