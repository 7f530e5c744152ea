"""The web UI's data (pure: a ReadModel and a query in, JSON-ready dicts out): one function per
view of netwatchd/api/web/app.py. Everything comes from the read model that D-Bus and the
HTTP listeners answer from; no second path into the engines.

Bad input is a WebQueryError with the message the page shows (HTTP 400); a device or alert that
does not exist is a NotFound (404). Text the devices sent (host names, DNS names, paths) goes
out as JSON strings: the page puts it in the DOM as text, never as markup.
"""
from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from netwatchd.api.http_guard import decimal
from netwatchd.errors import InvalidQuery, NoSuchDevice
from netwatchd.read_model import KINDS, Alert, ReadModel

PAGE_DEFAULT = 100
PAGE_MAX = 500
MAX_FILTER_CHARS = 200  # a filter longer than any MAC, vendor, name or address is a mistake
PROCESSES_TOP = 20
PROCESS_WINDOW_SEC = 3600  # the processes' outcomes and latencies: the last hour (or max_window_sec)
DEVICE_ALERTS = 100  # a device's page lists its newest alerts, this many
# L3 classes of the kernel's per-device counters: each frame is in exactly one
TRAFFIC_CLASSES = ("arp", "ipv4", "ipv6", "other")


class WebQueryError(ValueError):
    """A query the page cannot answer; the message says which parameter and why."""


class NotFound(LookupError):
    """No such device or alert; the message says which."""


# -- queries ---------------------------------------------------------------------------------------

def _text(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "")
    if len(value) > MAX_FILTER_CHARS:
        raise WebQueryError(f"{name} is longer than {MAX_FILTER_CHARS} characters")
    return value.strip()


def _number(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = query.get(name, "")
    if value == "":
        return default
    number = decimal(value)
    if number is None or not low <= number <= high:
        raise WebQueryError(f"{name} must be an integer {low}..{high}, got {value[:40]!r}")
    return int(number)


def _choice(query: Mapping[str, str], name: str, choices: Tuple[str, ...]) -> str:
    value = query.get(name) or choices[0]
    if value not in choices:
        raise WebQueryError(f"{name} must be one of {', '.join(choices)}, got {value[:40]!r}")
    return value


# -- the overview ----------------------------------------------------------------------------------

def local_midnight_usec(now: Optional[datetime.datetime] = None) -> int:
    now = now or datetime.datetime.now().astimezone()
    return int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1e6)


def overview(model: ReadModel, midnight_usec: Optional[int] = None) -> Dict[str, Any]:
    midnight = local_midnight_usec() if midnight_usec is None else midnight_usec
    devices = model.device_summaries()
    counts = model.alert_counts()
    lost = model.events_lost()
    return {
        "version": model.version(),
        "started_at_usec": model.started_at_usec(),
        "interfaces": model.interfaces(),
        "learning": model.learning(),
        "alerts_enabled": model.alerts_enabled(),
        "devices": {"total": len(devices), "new_today": sum(d["first_seen_usec"] >= midnight for d in devices)},
        "alerts": {"total": sum(counts.values()), "by_kind": counts},
        "connects": {"attempts": model.connect_attempts(), "per_tick": model.tick_totals(),
                     "tick_interval_sec": model.cfg.tick_interval_sec},
        "lost": {"connect_records": lost.connect, "device_records": lost.device,
                 "malformed_frames": model.malformed_frames(), "processes_untracked": model.processes_untracked(),
                 "handshakes_untracked": model.handshakes_untracked()},
        "dropped": model.dropped(),
        "tick": _tick_time(model),
    }


def _tick_time(model: ReadModel) -> Dict[str, Any]:
    t = model.tick_time()
    return {"ticks": t.ticks, "total_sec": t.total_sec, "recent_mean_ms": round(t.recent_mean_sec * 1e3, 3),
            "recent_max_ms": round(t.recent_max_sec * 1e3, 3)}


# -- devices ---------------------------------------------------------------------------------------

def traffic(device: Dict[str, Any]) -> Tuple[int, int]:
    """(bytes sent, bytes received) by the device, every frame once."""
    counters = device.get("counters", {})
    sent = sum(counters.get(f"tx_{c}_bytes", 0) for c in TRAFFIC_CLASSES)
    received = sum(counters.get(f"rx_{c}_bytes", 0) for c in TRAFFIC_CLASSES)
    return sent, received


DEVICE_SORTS: Dict[str, Callable[[Dict[str, Any]], Any]] = {
    "first_seen": lambda d: (d["first_seen_usec"], d["mac"]),
    "last_seen": lambda d: (d["last_seen_usec"], d["mac"]),
    "mac": lambda d: d["mac"],
    "vendor": lambda d: (d["vendor"].lower(), d["mac"]),
    "hostname": lambda d: (d["hostname"].lower(), d["mac"]),
    "address": lambda d: (d["ipv4"][:1], d["ipv6"][:1], d["mac"]),
    "traffic": lambda d: (sum(traffic(d)), d["mac"]),
}


def device_row(d: Dict[str, Any]) -> Dict[str, Any]:
    """What the devices' table shows of one device."""
    sent, received = traffic(d)
    return {"mac": d["mac"], "vendor": d["vendor"], "hostname": d["hostname"], "ipv4": d["ipv4"], "ipv6": d["ipv6"],
            "first_seen_usec": d["first_seen_usec"], "last_seen_usec": d["last_seen_usec"],
            "bytes_sent": sent, "bytes_received": received, "randomized": d["randomized"],
            "confirmed": d["confirmed"], "interface": d["interface"]}


def _matches(d: Dict[str, Any], needle: str) -> bool:
    haystack = [d["mac"], d["vendor"], d["hostname"], d["interface"], *d["ipv4"], *d["ipv6"]]
    return any(needle in text.lower() for text in haystack)


def devices(model: ReadModel, query: Mapping[str, str]) -> Dict[str, Any]:
    """A page of the inventory: filtered (`q`: part of a MAC, vendor, name, interface or
    address), sorted (`sort`, `order`), `offset`/`limit`."""
    sort = _choice(query, "sort", tuple(DEVICE_SORTS))
    order = _choice(query, "order", ("asc", "desc"))
    needle = _text(query, "q").lower()
    offset = _number(query, "offset", 0, 0, 10**9)
    limit = _number(query, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    everything = model.device_summaries()
    matched = [d for d in everything if _matches(d, needle)] if needle else everything
    matched.sort(key=DEVICE_SORTS[sort], reverse=order == "desc")
    return {"total": len(everything), "matched": len(matched), "offset": offset, "limit": limit,
            "sort": sort, "order": order, "q": needle, "devices": [device_row(d) for d in matched[offset:offset + limit]]}


class AlertsByDevice:
    """The alert log by the devices each alert names (its subject, or a MAC in its details), made
    again only when the log changed: a device's open page asks every 2 s, and walking a log of
    10000 alerts each time cost more than all the rest of its answer."""

    def __init__(self) -> None:
        self._version: Tuple[int, str] = (-1, "")
        self._by_mac: Dict[str, List[Alert]] = {}

    def of(self, model: ReadModel, mac: str) -> List[Alert]:
        """`mac`'s newest DEVICE_ALERTS alerts, oldest first."""
        log = model.alert_log()
        version = (len(log), log[-1].id if log else "")
        if version != self._version:
            by_mac: Dict[str, List[Alert]] = {}
            for a in log:
                named = {a.subject[7:]} if a.subject.startswith("device:") else set()
                named.update(a.details[k] for k in ("mac", "old_mac", "new_mac") if a.details.get(k))
                for m in named:
                    by_mac.setdefault(m, []).append(a)
            self._by_mac, self._version = by_mac, version
        return self._by_mac.get(mac, [])[-DEVICE_ALERTS:]


def device(model: ReadModel, mac_text: str, alerts_by_device: Optional[AlertsByDevice] = None) -> Dict[str, Any]:
    """One device: its answer as GetDevice gives it, its alerts, and its two rates' series."""
    try:
        answer = model.device(mac_text)
    except (NoSuchDevice, InvalidQuery) as e:
        raise NotFound(str(e)) from None
    mac = answer["mac"]
    sent, received = traffic(answer)
    return {"device": dict(answer, bytes_sent=sent, bytes_received=received),
            "alerts": [alert_row(a) for a in reversed((alerts_by_device or AlertsByDevice()).of(model, mac))],
            "z_threshold": model.cfg.alerts.z_threshold,
            "series": {"connects": model.tick_series("device_connects", mac),
                       "fan_out": model.tick_series("device_fan_out", mac)}}


# -- alerts ----------------------------------------------------------------------------------------

def alert_row(a: Alert) -> Dict[str, Any]:
    return dict(a.to_dict(), message_id=a.message_id)


TIMELINE_BUCKETS = 60  # at most, over the log's span
BUCKET_SECONDS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)


def timeline(matched: List[Alert]) -> Dict[str, Any]:
    """The matched alerts counted per kind in time buckets: the smallest bucket of BUCKET_SECONDS
    that spans them in at most TIMELINE_BUCKETS (an alert log holds at most alerts.max_alerts)."""
    if not matched:
        return {"bucket_sec": 0, "start_usec": [], "counts": {}}
    first = min(a.timestamp_usec for a in matched)
    last = max(a.timestamp_usec for a in matched)
    span_sec = (last - first) / 1e6
    bucket = next((b for b in BUCKET_SECONDS if span_sec / b < TIMELINE_BUCKETS), BUCKET_SECONDS[-1])
    start = int(first // (bucket * 1_000_000)) * bucket * 1_000_000
    n = int((last - start) // (bucket * 1_000_000)) + 1
    counts: Dict[str, List[int]] = {}
    for a in matched:
        counts.setdefault(a.kind, [0] * n)[int((a.timestamp_usec - start) // (bucket * 1_000_000))] += 1
    return {"bucket_sec": bucket, "start_usec": [start + i * bucket * 1_000_000 for i in range(n)],
            "counts": {kind: counts[kind] for kind in KINDS if kind in counts}}


def alerts(model: ReadModel, query: Mapping[str, str]) -> Dict[str, Any]:
    """The alert log newest first, filtered by `kind` and `subject` (part of it), paged; and the
    timeline of all it matched."""
    kind = query.get("kind", "")
    if kind and kind not in KINDS:
        raise WebQueryError(f"kind must be one of {', '.join(KINDS)}, got {kind[:40]!r}")
    subject = _text(query, "subject").lower()
    offset = _number(query, "offset", 0, 0, 10**9)
    limit = _number(query, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    log = model.alert_log()
    matched = [a for a in reversed(log) if (not kind or a.kind == kind) and subject in a.subject.lower()]
    return {"total": len(log), "matched": len(matched), "offset": offset, "limit": limit, "kinds": list(KINDS),
            "kind": kind, "subject": subject, "alerts_enabled": model.alerts_enabled(),
            "timeline": timeline(matched), "alerts": [alert_row(a) for a in matched[offset:offset + limit]]}


def chart_of(a: Alert) -> Optional[Tuple[str, str]]:
    """The (table, key) whose series shows why `a` fired, or None for kinds with no rate."""
    kind, (scope, _, name) = a.kind, a.subject.partition(":")
    if scope == "command":
        return "command_connects", name
    if scope != "device":
        return None
    return ("device_fan_out" if kind == "fan_out" else "device_connects"), name


def find_alert(model: ReadModel, alert_id: str) -> Alert:
    """The alert with this id in the log; NotFound names it."""
    found = next((a for a in reversed(model.alert_log()) if a.id == alert_id), None)
    if found is None:
        raise NotFound(f"no alert {alert_id[:80]!r} in the alert log (it keeps alerts.max_alerts)")
    return found


def alert(model: ReadModel, alert_id: str) -> Dict[str, Any]:
    found = find_alert(model, alert_id)
    chart = chart_of(found)
    return {"alert": alert_row(found), "z_threshold": model.cfg.alerts.z_threshold,
            "series_table": chart[0] if chart else "", "series_key": chart[1] if chart else "",
            "series": model.tick_series(*chart) if chart else None}


# -- processes -------------------------------------------------------------------------------------

def processes(model: ReadModel, query: Mapping[str, str]) -> Dict[str, Any]:
    """The top commands by connect() calls since the start, each with its last hour's outcomes and
    handshake latency percentiles (as D-Bus Summary gives them)."""
    limit = _number(query, "limit", PROCESSES_TOP, 1, 200)
    window = min(PROCESS_WINDOW_SEC, model.max_window_sec)
    totals = model.command_totals()
    top = sorted(totals.items(), key=lambda item: (-item[1].attempts, item[0]))[:limit]
    rows = []
    for command, total in top:
        s = model.summary(0, command, window)
        rows.append({"command": command, "attempts": total.attempts, "failed": total.failed,
                     **{k: s[k] for k in ("total_attempts", "succeeded", "refused", "timed_out", "other_failed",
                                          "in_progress", "unknown", "latency_samples", "latency_p50_usec", "latency_p90_usec",
                                          "latency_p99_usec") if k in s}})
    overflow = model.command_overflow()
    return {"window_sec": window, "commands": rows, "tracked": len(totals),
            "other": {"attempts": overflow.attempts, "failed": overflow.failed}}
