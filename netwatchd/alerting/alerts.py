"""Alerts (pure): what one is, the kinds there are, and the bounded log behind ListAlerts.

Every alert carries what an operator needs to see why it fired: the observed value, the
baseline it was compared with and the score, as journald fields (NETWATCHD_*) and on D-Bus.
"""
from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List

# One MESSAGE_ID per kind (systemd/netwatchd.catalog explains each: journalctl -x).
KINDS: Dict[str, Dict[str, Any]] = {
    "new_device": {"message_id": "4703ce0acd5240cbb57e9708c958357a", "priority": 5},  # notice
    "address_change": {"message_id": "8cda3aa23ac6453da62310ac7c216a92", "priority": 4},  # warning
    "connect_rate": {"message_id": "f737e7d8e9bb42de99b82a59c42f0dd1", "priority": 4},  # warning
    "fan_out": {"message_id": "1b4bb667acef4d14b880d00c9cb6cfd7", "priority": 3},  # err: a scan
    "beacon": {"message_id": "faa2a1af520c4085acc397e93eb70cec", "priority": 4},  # warning: call-home
    "mac_flood": {"message_id": "a321258b64d14d1691d5d609c106e3a2", "priority": 3},  # err: macof
    "dhcp_server_new": {"message_id": "b4e9e062ecb04496a4583e89f5c5b896", "priority": 4},  # warning: rogue DHCP?
    "dhcp_server_change": {"message_id": "02c1b2192322404d9a4529fb6bfce102", "priority": 4},  # warning
    "dns_nxdomain_burst": {"message_id": "673cf448b568485a96f1440cc4b46188", "priority": 4},  # warning: DGA
    "dns_tunnel": {"message_id": "671fa8ef88244e0191e4596cbaf890a3", "priority": 4},  # warning: DNS tunnel
    "port_scan": {"message_id": "7744efd929da4b46a6f1106945ee0768", "priority": 4},  # warning: a slow scan
    "host_scan": {"message_id": "4e318610dd3b441bb95ab8b16cf66738", "priority": 4},  # warning: a slow sweep
    "address_sweep": {"message_id": "1697c8429d564c3ab29c44a25819a3ef", "priority": 4},  # warning: host discovery (ARP, ping)
}


@dataclass(frozen=True)
class Alert:
    id: str
    kind: str
    subject: str  # "device:<mac>", "command:<name>", "ip:<address>", "interface:<name>", "randomized-macs"
    timestamp_usec: int
    message: str
    observed: float = 0.0
    baseline: float = 0.0
    score: float = 0.0
    details: Dict[str, str] = field(default_factory=dict)  # kind-specific: mac, ip, old_mac, ...

    @property
    def priority(self) -> int:
        return KINDS[self.kind]["priority"]

    @property
    def message_id(self) -> str:
        return KINDS[self.kind]["message_id"]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "timestamp_usec": self.timestamp_usec,
            "message": self.message,
            "observed": self.observed,
            "baseline": self.baseline,
            "score": self.score,
            "priority": self.priority,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Alert":
        return cls(
            id=d["id"], kind=d["kind"], subject=d["subject"], timestamp_usec=int(d["timestamp_usec"]),
            message=d["message"], observed=float(d.get("observed", 0)), baseline=float(d.get("baseline", 0)),
            score=float(d.get("score", 0)), details={str(k): str(v) for k, v in d.get("details", {}).items()},
        )


class AlertIds:
    """Ids that stay unique across restarts: the start time in seconds, then a sequence."""

    def __init__(self, start_usec: int):
        self._prefix = f"{start_usec // 1_000_000:x}"
        self._seq = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._seq)}"


class AlertLog:
    """The most recent alerts, newest last, plus counts per kind since the log was made."""

    def __init__(self, capacity: int, alerts: List[Alert] = ()):
        self._alerts: Deque[Alert] = deque(alerts, maxlen=capacity)
        self.counts: Counter = Counter(a.kind for a in self._alerts)

    def add(self, alert: Alert) -> None:
        self._alerts.append(alert)
        self.counts[alert.kind] += 1

    def newest(self, limit: int) -> List[Alert]:
        # from the newest end only: the web UI's live feed asks for one after every tick
        return list(itertools.islice(reversed(self._alerts), limit))

    def resize(self, capacity: int) -> None:
        if capacity != self._alerts.maxlen:
            self._alerts = deque(self._alerts, maxlen=capacity)

    def all(self) -> List[Alert]:
        return list(self._alerts)

    def __len__(self) -> int:
        return len(self._alerts)
