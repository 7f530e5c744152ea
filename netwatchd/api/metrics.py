"""Prometheus text exposition (format 0.0.4) of the daemon's counters (pure but for one read).

`snapshot(model)` gathers the numbers from the read model (netwatchd/read_model.py);
`render(snapshot, top_n)` turns them into text and is what unit tests feed; `read_bpf_stats` is
the one system call (/proc/self/fdinfo), `parse_fdinfo` its parsing. Label cardinality is
bounded: the top N commands by attempts, the rest as "other".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from netwatchd.read_model import KINDS, FleetStatus, HostIdentity, Log2Histogram, ReadModel

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"


@dataclass
class Snapshot:
    command_attempts: Dict[str, int] = field(default_factory=dict)
    command_failed: Dict[str, int] = field(default_factory=dict)
    overflow_attempts: int = 0  # commands the daemon no longer tracks by name: always "other"
    overflow_failed: int = 0
    devices: Optional[int] = None  # devices in the inventory (None, 0: none, or device watching is off)
    alerts: Dict[str, int] = field(default_factory=dict)
    events_lost: Dict[str, int] = field(default_factory=dict)  # path -> count
    bpf: Dict[str, Tuple[int, int]] = field(default_factory=dict)  # program -> (run_time_ns, run_cnt)
    beacon_pairs: int = 0  # (source, destination) pairs the beacon tracker holds
    beacon_pairs_dropped: int = 0  # pairs pushed out by beacons.max_pairs while still active
    latency: Dict[str, Log2Histogram] = field(default_factory=dict)  # command -> handshake latencies
    # HTTP listener (metrics, ebpf_server_api) -> connections closed at its cap (api/http_guard.py)
    http_connections_dropped: Dict[str, int] = field(default_factory=dict)
    # what the bounded tables dropped to stay bounded (ReadModel.dropped)
    dropped: Dict[str, int] = field(default_factory=dict)
    identity: HostIdentity = field(default_factory=HostIdentity)
    version: str = ""
    # (segment, mac, vendor, last seen in unix seconds) per device in the inventory
    devices_seen: List[Tuple[str, str, str, float]] = field(default_factory=list)
    fleet: FleetStatus = field(default_factory=FleetStatus)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


class _Writer:
    def __init__(self) -> None:
        self.lines: List[str] = []

    def family(self, name: str, kind: str, text: str) -> None:
        self.lines.append(f"# HELP {name} {_help(text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value, **labels: str) -> None:
        if labels:
            inner = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
            name = f"{name}{{{inner}}}"
        if isinstance(value, float):
            text = repr(value) if value != int(value) else f"{value:.1f}"
        else:
            text = str(int(value))
        self.lines.append(f"{name} {text}")


def top_commands(attempts: Dict[str, int], top_n: int) -> List[str]:
    """The N commands with most attempts (ties by name, so the set is stable); never "other"."""
    ranked = sorted((c for c in attempts if c != OTHER), key=lambda c: (-attempts[c], c))
    return ranked[:top_n]


def bounded(values: Dict[str, int], top: List[str], overflow: int) -> Dict[str, int]:
    out = {c: values.get(c, 0) for c in top}
    out[OTHER] = sum(v for c, v in values.items() if c not in out) + overflow
    return out


def render(snap: Snapshot, top_n: int) -> str:
    w = _Writer()
    top = top_commands(snap.command_attempts, top_n)
    w.family("netwatchd_connect_attempts_total", "counter",
             f"connect() calls by command since the daemon started (top {top_n} commands, the rest as other)")
    for command, n in bounded(snap.command_attempts, top, snap.overflow_attempts).items():
        w.sample("netwatchd_connect_attempts_total", n, command=command)
    w.family("netwatchd_connect_failed_total", "counter",
             "connect() calls that failed, by command (the same commands as netwatchd_connect_attempts_total)")
    for command, n in bounded(snap.command_failed, top, snap.overflow_failed).items():
        w.sample("netwatchd_connect_failed_total", n, command=command)
    _latency(w, snap, top)
    w.family("netwatchd_devices", "gauge", "Devices in the inventory (0 when device watching is off)")
    w.sample("netwatchd_devices", snap.devices or 0)
    w.family("netwatchd_alerts_total", "counter", "Alerts raised, by kind")
    alerts = {kind: 0 for kind in KINDS}
    alerts.update(snap.alerts)
    for kind in sorted(alerts):
        w.sample("netwatchd_alerts_total", alerts[kind], kind=kind)
    w.family("netwatchd_beacon_pairs", "gauge", "(source, destination) pairs tracked for beacons")
    w.sample("netwatchd_beacon_pairs", snap.beacon_pairs)
    w.family("netwatchd_beacon_pairs_dropped_total", "counter",
             "Beacon pairs dropped while active because beacons.max_pairs was reached")
    w.sample("netwatchd_beacon_pairs_dropped_total", snap.beacon_pairs_dropped)
    w.family("netwatchd_events_lost_total", "counter",
             "Ring-buffer records lost (detail only: counts are kept in the kernel), by path")
    for path in ("connect", "device"):
        w.sample("netwatchd_events_lost_total", snap.events_lost.get(path, 0), path=path)
    w.family("netwatchd_http_connections_dropped_total", "counter",
             "Connections an HTTP listener closed, at its cap of live connections, to admit a new one "
             "(the oldest still sending its request), by listener")
    for listener in sorted(snap.http_connections_dropped):
        w.sample("netwatchd_http_connections_dropped_total", snap.http_connections_dropped[listener],
                 listener=listener)
    w.family("netwatchd_dropped_total", "counter",
             "Entries the bounded tables dropped to stay bounded, by what: devices evicted from the full "
             "inventory or expired, kernel device-map evictions, DNS answers nobody asked for, baseline keys, "
             "beacon pairs")
    for what in sorted(snap.dropped):
        w.sample("netwatchd_dropped_total", snap.dropped[what], what=what)
    _fleet(w, snap)
    w.family("netwatchd_bpf_run_time_seconds_total", "counter",
             "Time spent in each BPF program (needs sysctl kernel.bpf_stats_enabled=1, else 0)")
    for program in sorted(snap.bpf):
        w.sample("netwatchd_bpf_run_time_seconds_total", snap.bpf[program][0] / 1e9, program=program)
    w.family("netwatchd_bpf_run_count_total", "counter",
             "Runs of each BPF program (needs sysctl kernel.bpf_stats_enabled=1, else 0)")
    for program in sorted(snap.bpf):
        w.sample("netwatchd_bpf_run_count_total", snap.bpf[program][1], program=program)
    return "\n".join(w.lines) + "\n"


def _fleet(w: _Writer, snap: Snapshot) -> None:
    """Who this host is, its inventory by segment (one series per device: bounded by
    devices.max_devices), and the delivery to Alertmanager. Prometheus adds `instance`: `count by
    (segment, mac) (netwatchd_device_info)` is how many hosts see a device."""
    ident = snap.identity
    w.family("netwatchd_host_info", "gauge", "This host's id in the fleet's labels (fleet.host_id or /etc/machine-id)")
    w.sample("netwatchd_host_info", 1, host=ident.host, hostname=ident.hostname, version=snap.version)
    w.family("netwatchd_segment_info", "gauge", "The segment id of each watched interface (fleet.segment or computed)")
    for interface, segment in ident.segments:
        w.sample("netwatchd_segment_info", 1, interface=interface, segment=segment)
    w.family("netwatchd_device_info", "gauge", "A device in this host's inventory, by segment and MAC")
    for segment, mac, vendor, _seen in snap.devices_seen:
        w.sample("netwatchd_device_info", 1, segment=segment, mac=mac, vendor=vendor)
    w.family("netwatchd_device_last_seen_timestamp_seconds", "gauge", "When this host last saw the device (unix time)")
    for segment, mac, _vendor, seen in snap.devices_seen:
        w.sample("netwatchd_device_last_seen_timestamp_seconds", float(seen), segment=segment, mac=mac)
    fleet = snap.fleet
    w.family("netwatchd_fleet_spool_alerts", "gauge",
             "Alerts in the fleet spool: firing, or resolved and not yet accepted by every Alertmanager")
    w.sample("netwatchd_fleet_spool_alerts", fleet.spooled)
    w.family("netwatchd_fleet_alerts_firing", "gauge", "Alerts this host has firing in Alertmanager")
    w.sample("netwatchd_fleet_alerts_firing", fleet.firing)
    w.family("netwatchd_fleet_spool_dropped_total", "counter",
             "Alerts dropped before every Alertmanager had them (fleet.spool_max_alerts reached)")
    w.sample("netwatchd_fleet_spool_dropped_total", fleet.dropped)
    w.family("netwatchd_fleet_alerts_delivered_total", "counter",
             "Alerts (firing or resolved) an Alertmanager accepted")
    w.sample("netwatchd_fleet_alerts_delivered_total", fleet.delivered)
    w.family("netwatchd_fleet_delivery_failures_total", "counter",
             "Failed requests to an Alertmanager, by URL and cause")
    for url, cause, n in fleet.failures:
        w.sample("netwatchd_fleet_delivery_failures_total", n, alertmanager=url, cause=cause)


def device_rows(model: ReadModel, identity: HostIdentity) -> List[Tuple[str, str, str, float]]:
    return [(identity.segment_of(d.get("interface", "")), d["mac"], d.get("vendor", ""), d["last_seen_usec"] / 1e6)
            for d in model.device_summaries()]


def _latency(w: _Writer, snap: Snapshot, top: List[str]) -> None:
    """TCP handshake latency (SYN sent -> established) per command, from the kernel's log2
    histograms: bucket le=2^k us; the same commands as the attempts, the rest folded as other."""
    name = "netwatchd_connect_duration_seconds"
    w.family(name, "histogram", "TCP connect latency, SYN sent to established, by command (the same commands "
                                "as netwatchd_connect_attempts_total); buckets are powers of two microseconds")
    folded: Dict[str, Log2Histogram] = {}
    for command, hist in snap.latency.items():
        folded.setdefault(command if command in top else OTHER, Log2Histogram()).add(hist)
    for command in top + [OTHER]:
        hist = folded.get(command, Log2Histogram())
        for le, n in hist.cumulative():
            w.sample(f"{name}_bucket", n, command=command, le=repr(le))
        w.sample(f"{name}_bucket", hist.count, command=command, le="+Inf")
        w.sample(f"{name}_sum", hist.sum_usec / 1e6, command=command)
        w.sample(f"{name}_count", hist.count, command=command)


def parse_fdinfo(text: str) -> Tuple[int, int]:
    """(run_time_ns, run_cnt) from a bpf-prog fd's fdinfo; the lines exist only while
    kernel.bpf_stats_enabled=1 (or on older kernels never): 0 when absent."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key in ("run_time_ns", "run_cnt") and value.isdigit():
            values[key] = int(value)
    return values.get("run_time_ns", 0), values.get("run_cnt", 0)


def read_bpf_stats(program_fds: Dict[str, int], fdinfo_dir: str = "/proc/self/fdinfo") -> Dict[str, Tuple[int, int]]:
    stats = {}
    for name, fd in program_fds.items():
        try:
            with open(f"{fdinfo_dir}/{fd}", encoding="ascii", errors="replace") as f:
                stats[name] = parse_fdinfo(f.read())
        except OSError:
            stats[name] = (0, 0)
    return stats


def snapshot(model: ReadModel) -> Snapshot:
    """The numbers of a running daemon, through its read model (no kernel access but the latency
    histograms and fdinfo; the HTTP edge refreshes first, so counts are exact up to the scrape)."""
    snap = Snapshot()
    for command, totals in model.command_totals().items():
        snap.command_attempts[command] = totals.attempts
        snap.command_failed[command] = totals.failed
    overflow = model.command_overflow()
    snap.overflow_attempts, snap.overflow_failed = overflow.attempts, overflow.failed
    snap.events_lost = model.events_lost()._asdict()
    snap.latency = model.latency_by_command()
    snap.devices = model.device_count()
    snap.alerts = model.alert_counts()
    snap.beacon_pairs = model.beacon_pairs()
    snap.beacon_pairs_dropped = model.beacon_pairs_dropped()
    snap.dropped = model.dropped()
    snap.bpf = read_bpf_stats(model.program_fds())
    snap.identity = model.host_identity()
    snap.version = model.version()
    snap.devices_seen = device_rows(model, snap.identity)
    snap.fleet = model.fleet_status()
    return snap
