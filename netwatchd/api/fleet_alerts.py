"""The alerts a host owes its Alertmanagers (pure): what is firing, what was resolved, and what
each Alertmanager has accepted, bounded. netwatchd/api/fleet_sender.py drives it from its thread
and persists every changed entry (netwatchd/store/alert_spool.py), so nothing waits on a dead
Alertmanager and nothing is lost across a restart.

Per alert (one label set), per Alertmanager URL:
- `acked[url]` is the version that URL accepted; a change (raised again, more observers,
  resolved) makes a new version, which is owed to every URL again;
- `fired` holds the URLs that accepted a firing version: a URL that never had the alert firing
  gets it firing first, then resolved, in two requests, never the resolve alone first;
- a resolved alert every current URL accepted is done and leaves.
Bounded by fleet.spool_max_alerts: a new alert beyond it pushes out the oldest resolved one, else
the oldest firing one (counted in `dropped`).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

MAX_OBSERVERS = 256  # host ids one alert lists; more would make each post kilobytes


@dataclass
class Entry:
    key: str  # fleet_labels.fingerprint(labels)
    labels: Dict[str, str]
    annotations: Dict[str, str]
    starts_at: float  # unix seconds
    lifetime_end: float
    resolved_at: float = 0.0  # 0: firing
    observers: Set[str] = field(default_factory=set)
    version: int = 1
    acked: Dict[str, int] = field(default_factory=dict)
    fired: Set[str] = field(default_factory=set)
    seq: int = 0  # order of the last raise: the oldest goes first when the spool is full

    @property
    def firing(self) -> bool:
        return not self.resolved_at

    def owed_to(self, url: str) -> bool:
        return self.acked.get(url) != self.version

    def to_json(self) -> dict:
        return {"key": self.key, "labels": self.labels, "annotations": self.annotations,
                "starts_at": self.starts_at, "lifetime_end": self.lifetime_end, "resolved_at": self.resolved_at,
                "observers": sorted(self.observers), "version": self.version, "acked": self.acked,
                "fired": sorted(self.fired), "seq": self.seq}

    @classmethod
    def from_json(cls, d: dict) -> "Entry":
        return cls(key=str(d["key"]), labels={str(k): str(v) for k, v in d["labels"].items()},
                   annotations={str(k): str(v) for k, v in d["annotations"].items()},
                   starts_at=float(d["starts_at"]), lifetime_end=float(d["lifetime_end"]),
                   resolved_at=float(d.get("resolved_at", 0)), observers=set(map(str, d.get("observers", ()))),
                   version=int(d.get("version", 1)), acked={str(k): int(v) for k, v in d.get("acked", {}).items()},
                   fired=set(map(str, d.get("fired", ()))), seq=int(d.get("seq", 0)))


def rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


class FleetAlerts:
    def __init__(self, max_alerts: int, entries: Iterable[Entry] = ()):
        self.max_alerts = max_alerts
        self.entries: Dict[str, Entry] = {e.key: e for e in entries}
        self._seq = max((e.seq for e in self.entries.values()), default=0)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.entries)

    def firing_count(self) -> int:
        return sum(1 for e in self.entries.values() if e.firing)

    # -- what the host raises ------------------------------------------------------------------
    def add(self, key: str, labels: Dict[str, str], annotations: Dict[str, str], now: float,
            lifetime: float, observer: str) -> Tuple[Entry, List[Entry]]:
        """An alert raised now: a new entry, or a firing one raised again (new annotations, its
        lifetime from now). Returns it and the entries pushed out to make room."""
        self._seq += 1
        e = self.entries.get(key)
        if e is not None and e.firing:
            e.observers.add(observer)
            seen = sorted(e.observers)  # the new post keeps every observer learnt so far
            e.annotations = dict(annotations, observers=" ".join(seen), observer_count=str(len(seen)))
            e.lifetime_end, e.seq = now + lifetime, self._seq
            e.version += 1
            return e, []
        if e is not None:  # resolved, perhaps not yet everywhere: it fires again from now
            del self.entries[key]
        pushed = self._make_room()
        e = Entry(key, labels, annotations, now, now + lifetime, observers={observer}, seq=self._seq)
        self.entries[key] = e
        return e, pushed

    def _make_room(self, room: int = 1) -> List[Entry]:
        pushed = []
        while self.entries and len(self.entries) > self.max_alerts - room:
            oldest = min(self.entries.values(), key=lambda e: (e.firing, e.seq))  # resolved first
            del self.entries[oldest.key]
            self.dropped += 1
            pushed.append(oldest)
        return pushed

    def resize(self, max_alerts: int) -> List[Entry]:
        """fleet.spool_max_alerts changed: the entries beyond the new bound pushed out."""
        self.max_alerts = max_alerts
        return self._make_room(room=0)

    def expire(self, now: float) -> List[Entry]:
        """Firing alerts whose lifetime ended: resolved now."""
        ended = [e for e in self.entries.values() if e.firing and e.lifetime_end <= now]
        for e in ended:
            e.resolved_at = now
            e.version += 1
        return ended

    def learn_observers(self, key: str, observers: Iterable[str]) -> Optional[Entry]:
        """Host ids another observer's post listed: the entry if that added any."""
        e = self.entries.get(key)
        if e is None or not e.firing:
            return None
        new = set(observers) - e.observers
        room = MAX_OBSERVERS - len(e.observers)
        if not new or room <= 0:
            return None
        e.observers |= set(sorted(new)[:room])
        seen = sorted(e.observers)
        e.annotations = dict(e.annotations, observers=" ".join(seen), observer_count=str(len(seen)))
        e.version += 1
        return e

    # -- what each Alertmanager is owed -------------------------------------------------------------
    def owed(self, url: str, everything: bool) -> Tuple[List[Entry], List[Entry]]:
        """(to post firing, to post resolved) for `url`: what changed since it last accepted, or
        every firing alert too on a re-send (`everything`). An alert resolved before `url` ever
        had it firing is in both: firing first."""
        firing, resolved = [], []
        for e in self.entries.values():
            if e.firing:
                if everything or e.owed_to(url):
                    firing.append(e)
            elif e.owed_to(url):
                resolved.append(e)
                if url not in e.fired:
                    firing.append(e)
        return firing, resolved

    @staticmethod
    def accepted(url: str, sent: Sequence[Tuple[Entry, int]], firing: bool) -> List[Entry]:
        """`url` accepted these (entry, version sent) pairs, posted firing or resolved. A firing
        post of an alert resolved since (or sent firing only to precede its resolve) acks nothing:
        its resolve is still owed. Returns the entries whose delivery state changed (a re-send of
        what `url` had already changes nothing: nothing to write)."""
        changed = []
        for e, version in sent:
            before = (e.acked.get(url), url in e.fired)
            if firing:
                e.fired.add(url)
            if e.version == version and e.firing == firing:
                e.acked[url] = version
            if (e.acked.get(url), url in e.fired) != before:
                changed.append(e)
        return changed

    def done(self, urls: Sequence[str]) -> List[Entry]:
        """Resolved alerts every current URL accepted: removed, and returned."""
        finished = [e for e in self.entries.values() if not e.firing and not any(e.owed_to(u) for u in urls)]
        for e in finished:
            del self.entries[e.key]
        return finished

    # -- the request body ------------------------------------------------------------------------------
    @staticmethod
    def payload(e: Entry, now: float, resend_sec: float, as_firing: bool) -> dict:
        """One alert as Alertmanager's API v2 takes it. Firing: endsAt 4 re-sends ahead (so a host
        that goes away lets its alerts resolve, as Prometheus' do) and never past the lifetime.
        The entry keeps its generatorURL among its annotations (`generator_url`): sent apart."""
        ends = min(e.lifetime_end, now + 4 * resend_sec) if e.firing else e.resolved_at
        if as_firing and not e.firing:
            ends = now + 4 * resend_sec
        notes = dict(e.annotations)
        generator_url = notes.pop("generator_url", "")
        return {"labels": e.labels, "annotations": notes, "startsAt": rfc3339(e.starts_at),
                "endsAt": rfc3339(ends), "generatorURL": generator_url}
