"""An alert's identity for a fleet (pure): the Alertmanager labels, the annotations, and the
journal fields that carry the same ids.

Labels are identities only, so that the same event posted by many observers is one alert in
Alertmanager (it dedups by the label set):
- every alert: `alertname` (Netwatchd + the kind in CamelCase), `kind`, `severity`;
- about a device on the LAN (`device:<mac>`): `segment` and `mac`, and no host: every host on
  the segment that sees the device posts the same labels;
- an address that moved (`ip:<address>`): `segment`, `ip` and the `mac` it moved to (what an
  inhibition of that MAC's new_device matches);
- the LAN as a whole (a MAC flood on `interface:<name>`, new randomized MACs): `segment` and
  `subject`;
- about a command on this host (`command:<name>`): `host` and `command`;
- beacons add their `destination`.
Everything else (who observed it, vendor, addresses, rates, scores, the MESSAGE_ID) is an
annotation: it may differ between observers and must not split the alert.
"""
from __future__ import annotations

from typing import Dict, Iterable

from netwatchd.fleet_settings import IDENTITY as HOST_ID  # what a host id read back may be
from netwatchd.read_model import Alert, HostIdentity

ANNOTATION_MAX = 1024  # characters of one annotation value (details are bounded; the message too)
# journald PRIORITY -> severity, as Prometheus' alerting rules name them
SEVERITIES = ((3, "critical"), (4, "warning"), (7, "info"))


def alertname(kind: str) -> str:
    return "Netwatchd" + "".join(part.capitalize() for part in kind.split("_"))


def severity(priority: int) -> str:
    return next(name for top, name in SEVERITIES if priority <= top)


def labels(alert: Alert, identity: HostIdentity, interface: str = "") -> Dict[str, str]:
    """The alert's Alertmanager labels. `interface` is where the device was seen when the alert
    does not say (its segment)."""
    out = {"alertname": alertname(alert.kind), "kind": alert.kind, "severity": severity(alert.priority)}
    scope, _, name = alert.subject.partition(":")
    if scope == "command":
        out.update(host=identity.host, command=name)
    else:
        out["segment"] = identity.segment_of(alert.details.get("interface") or interface)
        if scope == "device":
            out["mac"] = name
        elif scope == "ip":
            out["ip"] = name
            if alert.details.get("new_mac"):
                out["mac"] = alert.details["new_mac"]
        else:
            out["subject"] = alert.subject if scope != "interface" else "mac-flood"
    if alert.kind == "beacon" and alert.details.get("destination"):
        out["destination"] = alert.details["destination"]
    return out


def _clip(value: str) -> str:
    return value if len(value) <= ANNOTATION_MAX else value[:ANNOTATION_MAX - 1] + "…"


def annotations(alert: Alert, identity: HostIdentity, observers: Iterable[str] = ()) -> Dict[str, str]:
    """Everything about the alert that is not its identity. `observers`: the host ids known to
    have raised it (this host is added); Alertmanager keeps the newest post's annotations, so
    each observer re-posts the union it read back (netwatchd/api/fleet_sender.py)."""
    seen = sorted(set(observers) | {identity.host})
    out = {
        "summary": alert.message,
        "observer": identity.host,
        "observer_hostname": identity.hostname,
        "observers": " ".join(seen),
        "observer_count": str(len(seen)),
        "alert_id": alert.id,
        "subject": alert.subject,
        "message_id": alert.message_id,
        "observed": _number(alert.observed),
        "baseline": _number(alert.baseline),
        "score": _number(alert.score),
    }
    for key, value in sorted(alert.details.items()):
        out.setdefault(key, str(value))  # a detail never overwrites the fixed ones above
    return {key: _clip(value) for key, value in out.items()}


def journal_fields(alert: Alert, identity: HostIdentity, interface: str = "") -> Dict[str, str]:
    """NETWATCHD_HOST_ID (always: who wrote the entry), NETWATCHD_SEGMENT and the alert's other
    label ids as fields, so journal-remote's merged record is searched by the same ids. Not
    NETWATCHD_HOST: port_scan's detail of that name is the host scanned."""
    fields = {"NETWATCHD_HOST_ID": identity.host}
    for key, value in labels(alert, identity, interface).items():
        if key not in ("alertname", "kind", "severity", "host", "subject"):  # NETWATCHD_SUBJECT is the alert's
            fields["NETWATCHD_" + key.upper()] = value
    return fields


def _number(value: float) -> str:
    value = round(float(value), 6)
    return str(int(value)) if value.is_integer() else repr(value)


def fingerprint(label_set: Dict[str, str]) -> str:
    """One alert's key in the spool: its labels, sorted (what Alertmanager dedups by)."""
    return "\x1f".join(f"{k}={v}" for k, v in sorted(label_set.items()))
