"""The read model: everything an edge reads from the running daemon, and how it registers for
what the daemon announces. One typed interface for D-Bus, the HTTP listeners (our JSON routes,
/metrics, ebpf-server's routes), metrics, the fleet client and the web UI.

Edges are handed a ReadModel, never the Daemon: netwatchd/daemon_view.py is the daemon's one
implementation, over its parts (connect engine, device engine, alert pipeline, probes);
test fakes implement this interface and nothing deeper.

It is a typing.Protocol rather than a base class: an edge depends on these names and types
alone, not on the module that implements them (which imports every engine), and a fake needs
no inheritance. ConnectQueries is the part ebpf-server's routes and our JSON routes use; the
connect engine (netwatchd.connects.monitor.ConnectMonitor) has that shape itself.

Figures, lists and counts answer as off when a part is absent (no device watching, no
alerting): nothing listed, a zero, False; the connect queries need the connect engine, which a
running daemon always has. Connect answers are exact up to the last refresh(), which reads the
connect counters and records from the kernel: the edges call it before they answer.

The engines' types an edge may see are the VOCABULARY below, re-exported here:
netwatchd/api/ imports no engine module (tests/unit/test_architecture.py).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Protocol, Tuple, runtime_checkable

from netwatchd.alerting.alerts import KINDS, Alert
from netwatchd.config import DaemonConfig
from netwatchd.connects.latency import Log2Histogram
from netwatchd.connects.records import ConnectionRecord

# What of the engines the read model hands over, by module: an edge imports these from here.
VOCABULARY = {
    "netwatchd.alerting.alerts": ("KINDS", "Alert"),  # the alert kinds; ListAlerts' and the sinks' records
    "netwatchd.connects.latency": ("Log2Histogram",),  # the kernel's handshake latencies per command
    "netwatchd.connects.records": ("ConnectionRecord",),  # one connect, as ebpf-server's listing shows it
}

__all__ = ["KINDS", "Alert", "Log2Histogram", "ConnectionRecord", "EventsLost", "CommandTotals", "AlertSink",
           "PatternListener", "TickListener", "ConnectQueries", "ReadModel", "HostIdentity", "FleetStatus",
           "CHART_TABLES", "TickTime"]

# called as listener(mac, peer, port, transport, name) for each new (device, peer, port,
# transport) the TC classifier reports; name is the DNS name the device looked the peer up by, or ""
PatternListener = Callable[[str, str, int, str, str], None]
# called as listener(time_usec) after each tick (the web UI's live pages)
TickListener = Callable[[int], None]
# The rates tick_series() draws: per device its SYNs and its fan-out (first-seen peers or ports),
# per command its connect() calls; each judged against its own baseline by the detector
CHART_TABLES = ("device_connects", "device_fan_out", "command_connects")


class EventsLost(NamedTuple):
    """Records lost, per path: counts never depend on them (they are kept in the kernel)."""

    connect: int = 0  # connect records: the ring full, or not decodable (D-Bus EventsLost)
    device: int = 0  # ring full, snippets throttled, no room in the device map, not decodable (DeviceEventsLost)


class CommandTotals(NamedTuple):
    """connect() calls of one command since the daemon started."""

    attempts: int = 0
    failed: int = 0


class HostIdentity(NamedTuple):
    """Who this host is to a fleet (netwatchd/api/fleet_identity.py reads it): the ids its alerts'
    labels and journal fields carry."""

    host: str = ""  # fleet.host_id, else /etc/machine-id
    hostname: str = ""  # for people: not an identity (renamed, cloned)
    segments: Tuple[Tuple[str, str], ...] = ()  # (interface, segment id) per watched interface

    def segment_of(self, interface: str = "") -> str:
        """The segment of `interface`, else of the first watched interface ('' with none)."""
        for name, segment in self.segments:
            if name == interface:
                return segment
        return self.segments[0][1] if self.segments else ""


class FleetStatus(NamedTuple):
    """Delivery to Alertmanager (fleet.*): the spool and what failed, since the start."""

    enabled: bool = False
    spooled: int = 0  # alerts in the spool: firing, or resolved and not yet delivered everywhere
    firing: int = 0
    dropped: int = 0  # pushed out of the full spool before every Alertmanager had them
    delivered: int = 0  # alerts (firing or resolved) an Alertmanager accepted
    failures: Tuple[Tuple[str, str, int], ...] = ()  # (alertmanager URL, cause, failed requests)


class TickTime(NamedTuple):
    """The daemon's own ticks (reading the kernel's counters, the engines, the alerts, the tick
    listeners): what they cost it, since the start and lately."""

    ticks: int = 0
    total_sec: float = 0.0
    recent_mean_sec: float = 0.0  # over the last RECENT_TICKS (netwatchd/daemon.py)
    recent_max_sec: float = 0.0


class AlertSink(Protocol):
    """Receives each alert as it is raised (journald, D-Bus AlertRaised)."""

    def emit(self, alert: Alert) -> None: ...


class ConnectQueries(Protocol):
    """Summary and ListConnections (D-Bus, our JSON routes) and ebpf-server's listing."""

    @property
    def max_window_sec(self) -> int:
        """The longest duration a summary may ask for (connections.max_window_sec, as running)."""

    def refresh(self) -> None:
        """Read the connect counters and records from the kernel now: answers exact up to here."""

    def summary(self, pid: int, command: str, duration_sec: int) -> Dict[str, Any]:
        """Summary's answer (fields as D-Bus Summary); InvalidQuery names a bad argument."""

    def list_connections(self, pid: int, limit: int) -> Tuple[List[Dict[str, Any]], bool]:
        """ListConnections' records, newest first, and whether the limit cut them."""

    def list_per_process(self, pid: int, limit: int,
                         keep: Callable[[ConnectionRecord], bool]) -> Tuple[Dict[int, List[ConnectionRecord]], bool]:
        """Up to `limit` newest records per process that `keep`, oldest first (ebpf-server's listing)."""


@runtime_checkable
class ReadModel(ConnectQueries, Protocol):
    """What the edges read; see the module's docstring."""

    @property
    def cfg(self) -> DaemonConfig:
        """The running configuration (a reload replaces it)."""

    # -- status figures -------------------------------------------------------------------------
    def version(self) -> str: ...

    def started_at_usec(self) -> int: ...

    def config_path(self) -> str: ...

    def programs_attached(self) -> List[str]:
        """Our BPF programs, with the interface and attach path (tcx, clsact) of the TC ones."""

    def kernel_release(self) -> str: ...

    def kernel_fallbacks(self) -> List[str]:
        """What this kernel gives another way, or not at all (empty on a kernel with everything)."""

    def interfaces(self) -> List[str]:
        """The interfaces the TC classifier is attached to."""

    def connect_attempts(self) -> int:
        """connect() calls counted since the start (exact up to the last refresh())."""

    def device_count(self) -> int: ...

    def events_lost(self) -> EventsLost: ...

    def malformed_frames(self) -> int:
        """Frames the TC classifier could not parse."""

    def processes_untracked(self) -> int:
        """Processes whose connects found the kernel's counter map full."""

    def handshakes_untracked(self) -> int:
        """Non-blocking TCP connects whose outcome could not be followed (counted unknown)."""

    def latency_samples_lost(self) -> int:
        """Handshake latencies not added to the kernel's histograms (their map was full)."""

    def tick_time(self) -> TickTime:
        """How long the daemon's ticks take (time.perf_counter around each)."""

    def dropped(self) -> Dict[str, int]:
        """What the bounded tables (devices, DNS questions, baselines, beacon pairs) dropped to
        stay bounded since the start, by what: each part that runs says all its keys, 0 too."""

    def protocol_totals(self) -> Dict[str, int]:
        """Packets seen on the watched interfaces, per protocol (both directions)."""

    # -- devices (answers as D-Bus ListDevices / GetDevice give them) --------------------------------
    def device_summaries(self) -> List[Dict[str, Any]]:
        """Every device's summary (no name lists), first seen first."""

    def device_page(self, offset: int, limit: int) -> Tuple[List[Dict[str, Any]], int]:
        """The summaries of the devices [offset, offset + limit) in device_summaries' order, and
        how many devices there are; limit as ListConnections' (0 = 100, at most 1000)."""

    def device(self, mac_or_ip: str) -> Dict[str, Any]:
        """One device's answer, name lists included; NoSuchDevice when none (or watching is off)."""

    # -- alerts ------------------------------------------------------------------------------------
    def alerts_enabled(self) -> bool:
        """alerts.enabled as running; False when the daemon has no alerting."""

    def learning(self) -> bool:
        """True while alerts are on and the baselines are still learning."""

    def alert_counts(self) -> Dict[str, int]:
        """Alerts raised per kind since the alert log was made (persisted across restarts), every
        kind listed, 0 too; kept while alerts are off; {} when the daemon has no alerting."""

    def newest_alerts(self, limit: int) -> List[Alert]:
        """Up to `limit` alerts, newest first (limit as ListConnections'); [] while alerts are off."""

    def alert_log(self) -> List[Alert]:
        """Every alert the log holds (alerts.max_alerts), oldest first; [] while alerts are off."""

    # -- the charts (web.series_ticks) ---------------------------------------------------------------
    def tick_series(self, table: str, key: str) -> Dict[str, List]:
        """A key of a CHART_TABLES table over the last ticks, oldest first: "time_usec", "value"
        (0 on a tick it had none, None where it was left out), and its baseline after each tick,
        "mean" and "std" (None where unknown); lists all empty when the web UI is off."""

    def tick_totals(self, since_usec: int = 0) -> Dict[str, List]:
        """Per tick over the same ticks (only those after `since_usec` when given): "time_usec",
        "connects", "failed", "new_devices", "alerts" (the host's); only "time_usec", empty, when
        the web UI is off."""

    # -- the metrics' inputs -------------------------------------------------------------------------
    def command_totals(self) -> Dict[str, CommandTotals]:
        """connect() calls per command since the start, for the commands tracked by name."""

    def command_overflow(self) -> CommandTotals:
        """The commands beyond those tracked by name, together."""

    def latency_by_command(self) -> Dict[str, Log2Histogram]:
        """The kernel's handshake latency histograms per command, read now."""

    def program_fds(self) -> Dict[str, int]:
        """Our BPF programs' file descriptors, by name (their fdinfo has the run statistics)."""

    def beacon_pairs(self) -> int:
        """(source, destination) pairs the beacon tracker holds."""

    def beacon_pairs_dropped(self) -> int:
        """Pairs pushed out by beacons.max_pairs while still active."""

    # -- the fleet -----------------------------------------------------------------------------------------
    def host_identity(self) -> HostIdentity:
        """This host's fleet ids, as the last refresh read them (they follow DHCP and reloads)."""

    def fleet_status(self) -> FleetStatus:
        """Delivery to Alertmanager; enabled False (and zeros) when fleet.alertmanager_urls is empty."""

    # -- what the daemon announces ----------------------------------------------------------------------
    def add_alert_sink(self, sink: AlertSink) -> None:
        """`sink.emit(alert)` for each alert raised from now on (nothing when there is no alerting)."""

    def add_pattern_listener(self, listener: PatternListener) -> None:
        """`listener(...)` for each new pattern from now on (nothing when devices are not watched)."""

    def add_tick_listener(self, listener: TickListener) -> None:
        """`listener(time_usec)` after each tick from now on, its alerts raised and its figures in."""
