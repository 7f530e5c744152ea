"""The read model (netwatchd/read_model.py) over the daemon's parts: the one place that knows
how the connect engine, the device engine, the alert pipeline and the probes are laid out.
The Daemon builds one and hands it to every edge; each part may be absent (devices.enabled
false; a stand-in without a kernel, tests/integration/alert_service.py), and then answers as
off: nothing listed, zeros, False.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from netwatchd import __version__
from netwatchd.alerting.tick_series import DETECTOR_TABLES
from netwatchd.config import DaemonConfig
from netwatchd.connects.queries import check_list
from netwatchd.devices.queries import device_answer, device_summary
from netwatchd.errors import NoSuchDevice
from netwatchd.read_model import (KINDS, Alert, AlertSink, CommandTotals, ConnectionRecord, EventsLost, FleetStatus,
                                  HostIdentity, Log2Histogram, PatternListener, TickListener, TickTime)


def alert_counts(alerting) -> Dict[str, int]:
    """Alerts raised per kind in an AlertPipeline's log, every kind listed (0 too) so readers see
    stable keys; {} without a pipeline."""
    if alerting is None:
        return {}
    counts = {kind: 0 for kind in KINDS}
    counts.update((kind, int(n)) for kind, n in alerting.log.counts.items())
    return counts


def device_page(devices: Sequence[Any], offset: int, limit: int) -> Tuple[List[Dict[str, Any]], int]:
    """The summaries of devices[offset:offset + limit] (in ListDevices' order) and how many
    devices there are: only the page's devices are summarised."""
    return [device_summary(d) for d in devices[offset:offset + limit]], len(devices)


class DaemonView:
    """A ReadModel over `connects` (ConnectMonitor), `devices` (DeviceMonitor) and `alerting`
    (AlertPipeline), each None when absent. `config` gives the running configuration, `kernel`
    the running kernel's features (netwatchd/kernel/features.py: release, notes())."""

    def __init__(self, connects, devices, alerting, *, config: Callable[[], DaemonConfig], config_path: str,
                 started_at_usec: int, kernel: Callable[[], Any],
                 identity: Callable[[], HostIdentity] = HostIdentity, fleet: Callable[[], FleetStatus] = FleetStatus,
                 tick_listeners: Optional[List[TickListener]] = None, tick_time: Callable[[], TickTime] = TickTime):
        self._connects = connects
        self._devices = devices
        self._alerting = alerting
        self._config = config
        self._config_path = config_path
        self._started_at_usec = started_at_usec
        self._kernel = kernel
        self._identity = identity
        self._fleet = fleet
        self._tick_listeners = [] if tick_listeners is None else tick_listeners  # the daemon calls them
        self._tick_time = tick_time

    @property
    def cfg(self) -> DaemonConfig:
        return self._config()

    # -- connects --------------------------------------------------------------------------------
    @property
    def max_window_sec(self) -> int:
        if self._connects is None:
            return self.cfg.connections.max_window_sec
        return self._connects.max_window_sec

    def refresh(self) -> None:
        if self._connects is not None:
            self._connects.refresh()

    def summary(self, pid: int, command: str, duration_sec: int) -> Dict[str, Any]:
        return self._connects.summary(pid, command, duration_sec)

    def list_connections(self, pid: int, limit: int) -> Tuple[List[Dict[str, Any]], bool]:
        return self._connects.list_connections(pid, limit)

    def list_per_process(self, pid: int, limit: int,
                         keep: Callable[[ConnectionRecord], bool]) -> Tuple[Dict[int, List[ConnectionRecord]], bool]:
        return self._connects.list_per_process(pid, limit, keep)

    # -- status figures ----------------------------------------------------------------------------
    def version(self) -> str:
        return __version__

    def started_at_usec(self) -> int:
        return self._started_at_usec

    def config_path(self) -> str:
        return self._config_path

    def programs_attached(self) -> List[str]:
        names = list(self._connects.probe.attached_programs()) if self._connects is not None else []
        if self._devices is not None:
            path = getattr(self._devices.probe, "attach_path", lambda: "")()  # tcx or clsact
            names += [f"nw_tc_{d}@{ifname}" + (f" ({path})" if path else "")
                      for ifname in self._devices.interfaces() for d in ("ingress", "egress")]
        return names

    def kernel_release(self) -> str:
        return self._kernel().release

    def kernel_fallbacks(self) -> List[str]:
        return self._kernel().notes()

    def interfaces(self) -> List[str]:
        return self._devices.interfaces() if self._devices is not None else []

    def connect_attempts(self) -> int:
        return self._connects.history.total.attempts if self._connects is not None else 0

    def device_count(self) -> int:
        return len(self._devices.devices) if self._devices is not None else 0

    def events_lost(self) -> EventsLost:
        return EventsLost(connect=self._connects.events_lost() if self._connects is not None else 0,
                          device=self._devices.events_lost() if self._devices is not None else 0)

    def malformed_frames(self) -> int:
        return self._devices.malformed_frames() if self._devices is not None else 0

    def processes_untracked(self) -> int:
        return self._connects.processes_untracked() if self._connects is not None else 0

    def handshakes_untracked(self) -> int:
        return self._connects.handshakes_untracked() if self._connects is not None else 0

    def latency_samples_lost(self) -> int:
        return self._connects.latency_samples_lost() if self._connects is not None else 0

    def tick_time(self) -> TickTime:
        return self._tick_time()

    def dropped(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for part in (self._devices, self._alerting):
            if part is not None:
                counts.update(part.dropped())
        fleet = self._fleet()
        if fleet.enabled:
            counts["fleet_alerts_dropped"] = fleet.dropped
        series = self._series()
        if series is not None:
            counts["chart_points"] = series.dropped
        return counts

    def protocol_totals(self) -> Dict[str, int]:
        return self._devices.protocol_totals() if self._devices is not None else {}

    # -- devices --------------------------------------------------------------------------------------
    def device_summaries(self) -> List[Dict[str, Any]]:
        if self._devices is None:
            return []
        return [device_summary(d) for d in self._devices.list_devices()]

    def device_page(self, offset: int, limit: int) -> Tuple[List[Dict[str, Any]], int]:
        limit = check_list(0, limit)  # the same limits as ListConnections: 0 = 100, <= 1000
        if self._devices is None:
            return [], 0
        return device_page(self._devices.list_devices(), offset, limit)

    def device(self, mac_or_ip: str) -> Dict[str, Any]:
        if self._devices is None:
            raise NoSuchDevice("device watching is disabled in the configuration (devices.enabled)")
        return device_answer(self._devices.get_device(mac_or_ip))

    # -- alerts ---------------------------------------------------------------------------------------
    def _alerts_on(self):
        """The AlertPipeline while alerts are on, else None."""
        return self._alerting if self.alerts_enabled() else None

    def alerts_enabled(self) -> bool:
        return self._alerting is not None and self._alerting.cfg.enabled

    def learning(self) -> bool:
        alerting = self._alerts_on()
        return bool(alerting.learning()) if alerting is not None else False

    def alert_counts(self) -> Dict[str, int]:
        return alert_counts(self._alerting)

    def newest_alerts(self, limit: int) -> List[Alert]:
        limit = check_list(0, limit)  # the same limits as ListConnections: 0 = 100, <= 1000
        alerting = self._alerts_on()
        return alerting.log.newest(limit) if alerting is not None else []

    def alert_log(self) -> List[Alert]:
        alerting = self._alerts_on()
        return alerting.log.all() if alerting is not None else []

    # -- the charts ---------------------------------------------------------------------------------
    def _series(self):
        return self._alerting.series if self._alerting is not None else None

    def tick_series(self, table: str, key: str) -> Dict[str, list]:
        series = self._series()
        if series is None or table not in DETECTOR_TABLES:
            return {"time_usec": [], "value": [], "mean": [], "std": []}
        try:
            mean, std, _ = self._alerting.detector.tables[table].stats(key)
            now = (mean, std)
        except KeyError:
            now = None
        answer = series.series(table, key, now)
        # the band the detector judges against: σ is never below alerts.min_stddev
        floor = self.cfg.alerts.min_stddev
        answer["std"] = [None if std is None else max(std, floor) for std in answer["std"]]
        return answer

    def tick_totals(self, since_usec: int = 0) -> Dict[str, list]:
        series = self._series()
        return series.totals(since_usec) if series is not None else {"time_usec": []}

    # -- the metrics' inputs ------------------------------------------------------------------------
    def command_totals(self) -> Dict[str, CommandTotals]:
        if self._connects is None:
            return {}
        return {command: CommandTotals(counts.attempts, counts.failed)
                for command, counts in self._connects.command_totals.items()}

    def command_overflow(self) -> CommandTotals:
        if self._connects is None:
            return CommandTotals()
        overflow = self._connects.command_overflow
        return CommandTotals(overflow.attempts, overflow.failed)

    def latency_by_command(self) -> Dict[str, Log2Histogram]:
        if self._connects is None:
            return {}
        self._connects.refresh_histograms()  # the histograms live in the kernel
        return dict(self._connects.latency_by_command)

    def program_fds(self) -> Dict[str, int]:
        fds: Dict[str, int] = {}
        for part in (self._connects, self._devices):
            if part is not None:
                fds.update(getattr(part.probe, "program_fds", dict)())
        return fds

    def beacon_pairs(self) -> int:
        return len(self._alerting.beacons) if self._alerting is not None else 0

    def beacon_pairs_dropped(self) -> int:
        return self._alerting.beacons.dropped if self._alerting is not None else 0

    # -- the fleet ------------------------------------------------------------------------------------
    def host_identity(self) -> HostIdentity:
        return self._identity()

    def fleet_status(self) -> FleetStatus:
        return self._fleet()

    # -- what the daemon announces ---------------------------------------------------------------------
    def add_alert_sink(self, sink: AlertSink) -> None:
        if self._alerting is not None:
            self._alerting.sinks.append(sink)

    def add_pattern_listener(self, listener: PatternListener) -> None:
        if self._devices is not None:
            self._devices.add_pattern_listener(listener)

    def add_tick_listener(self, listener: TickListener) -> None:
        self._tick_listeners.append(listener)

