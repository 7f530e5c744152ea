"""The alerting core (pure): one tick's observation in, that tick's alerts out.

The one composition of the detector (alerting/detector.py: new devices, address moves, MAC
floods, fan-out, connect rates), the beacon tracker (alerting/beacons.py), the DHCP servers
(alerting/dhcp_servers.py), the slow-scan windows (alerting/scan_windows.py: never saved, five
minutes) and the learning window after the very first start. The daemon
runs it inside AlertPipeline (alerting/pipeline.py, which adds the saved state, the tick history
and the sinks around it) and `netwatchctl replay` runs it over the recorded history
(alerting/replay.py), so replay raises what the daemon would have raised: there is no second
wiring to drift from this one.

No I/O and no clock: time is the observation's own; what was learnt goes out as arrays
(`state`) and comes back (`load_state`) through whoever keeps it.
"""
from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np

from netwatchd.alerting.alerts import Alert, AlertIds
from netwatchd.alerting.beacons import BeaconTracker
from netwatchd.alerting.detector import Detector
from netwatchd.alerting.dns_anomalies import DnsAnomalies
from netwatchd.alerting.dhcp_servers import DhcpServers
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.scan_windows import Bars, ScanWindows
from netwatchd.config import AlertsConfig, BeaconsConfig
from netwatchd.start_columns import StartColumns


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
        self.dns = DnsAnomalies(cfg)  # NXDOMAIN bursts, tunnel-like names (alerting/dns_anomalies.py)
        self.dhcp_servers = DhcpServers()  # who answers DHCP per segment (alerting/dhcp_servers.py)
        self.scans = ScanWindows()  # slow port and host scans over a window (alerting/scan_windows.py)

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
        """One tick: what every part raised, the detector's first, then the beacons', then the DHCP
        servers'."""
        return self.detector.tick(obs) + self.beacons.tick(
            self.starts(obs), obs.time_usec, self.detector.ids, self.cfg.enabled, self.cfg.cooldown_sec
        ) + self.dhcp_servers.tick(obs.dhcp_replies, obs.time_usec, self.learning(obs.time_usec), self.detector.ids,
                                   self.cfg.enabled and self.cfg.dhcp_servers, self.cfg.cooldown_sec
        ) + self.dns.tick(obs.dns_activity, obs.time_usec, self.detector.ids, self.learning(obs.time_usec)
        ) + self._slow_scans(obs)

    @staticmethod
    def starts(obs: TickObservation) -> StartColumns:
        """The tick's connection starts for the beacon tracker, as one set of columns: the device
        lists (and, in histories written before command_starts, the commands' lists) and the
        commands' columns."""
        return StartColumns.concat([StartColumns.from_lists(obs.connection_starts), obs.command_starts])

    def _slow_scans(self, obs: TickObservation) -> List[Alert]:
        """port_scan / host_scan over alerts.scan_window_sec; quiet for a device whose fan_out (raised
        by the detector this tick or before) is cooling, and a tick later for one whose fan-out is
        above fan_out_floor now (its fan_out may need a second tick): a fast scan is one alert."""
        c, now = self.cfg, obs.time_usec
        bars = Bars(c.scan_window_sec, c.scan_ports_per_host, c.scan_hosts_per_port, c.cooldown_sec)
        fanning = {mac for mac, n in list(obs.device_new_ports.items()) + list(obs.device_new_peers.items())
                   if n >= c.fan_out_floor}
        probes = {f"device:{mac}": pairs for mac, pairs in obs.device_probes.items()}
        return self.scans.tick(probes, now, bars, self.detector.ids, c.enabled and not self.learning(now),
                               lambda source: self.detector.cooling(("fan_out", source), now),
                               lambda source: source[len("device:"):] in fanning)

    def reconfigure(self, cfg: AlertsConfig, beacons: BeaconsConfig = None) -> None:
        """New settings from the next tick; what was learnt stays (the learning window follows a
        changed learning_period_sec from the same first start)."""
        if beacons is not None:
            self.beacons.reconfigure(beacons)
        self.cfg = cfg
        self.detector.reconfigure(cfg, self.learning_until_usec)
        self.dns.reconfigure(cfg)

    # -- what was learnt ----------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        """Baselines, cooldowns, address moves, floods, seasonal profiles and DHCP servers, as arrays."""
        return {**self.detector.state(), **self.dhcp_servers.state()}

    def load_state(self, state: Dict[str, np.ndarray]) -> None:
        self.detector.load_state(state)
        self.dhcp_servers.load_state(state)

    def remember(self, alerts: Iterable[Alert]) -> None:
        """Alerts raised before (a restored alert log): beacons already reported stay quiet for
        their cooldown, and so do DNS anomalies."""
        alerts = list(alerts)
        self.beacons.remember_alerts(alerts)
        self.dns.remember(alerts)
        self.scans.remember(alerts)

    def dropped(self) -> Dict[str, int]:
        """What the bounded tables dropped since the start: baseline keys (idle, pushed out by
        alerts.max_baseline_keys, refused in a tick beyond it), beacon pairs (beacons.max_pairs) and
        DHCP servers (forgotten beyond MAX_SERVERS; unreported beyond an interface's alert budget),
        DNS anomaly windows and slow-scan pairs (alerting/scan_windows.py's bounds)."""
        counts = self.detector.pruned_counts()
        total = lambda what: sum(n for key, n in counts.items() if key.endswith("." + what))  # noqa: E731
        return {"baseline_keys_pruned": total("pruned"), "baseline_keys_evicted": total("evicted"),
                "baseline_keys_refused": total("refused"), "beacon_pairs_dropped": self.beacons.dropped,
                "dhcp_servers_forgotten": self.dhcp_servers.forgotten,
                "dhcp_servers_unreported": self.dhcp_servers.unreported,
                "dns_windows_dropped": self.dns.dropped, "scan_pairs_dropped": self.scans.dropped}
