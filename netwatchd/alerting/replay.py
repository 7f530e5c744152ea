"""What-if replay (pure): a fresh AlertingCore (alerting/core.py, the object the daemon's
AlertPipeline runs) with a given config over recorded ticks.

The core starts with nothing learnt, as on a first start: baselines warm up over the first
`warmup_ticks` recorded ticks and the learning period for new devices counts from the first
recorded tick. Replaying the same ticks with another config shows which alerts that config
would have raised, before it is applied to the running daemon.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List

from netwatchd.alerting.alerts import Alert
from netwatchd.alerting.core import AlertingCore
from netwatchd.alerting.observation import TickObservation
from netwatchd.config import AlertsConfig, BeaconsConfig


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
    """The alerts a fresh AlertingCore with `cfg` and `beacons` -- the daemon's own core, with
    nothing learnt, its first start at the first observation -- raises over `observations`
    (oldest first)."""
    core = None
    alerts: List[Alert] = []
    for obs in observations:
        if core is None:
            core = AlertingCore(cfg, beacons, first_start_usec=obs.time_usec, now_usec=obs.time_usec)
        alerts += core.tick(obs)
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

