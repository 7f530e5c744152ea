"""The detector (pure): one tick's observation in, alerts out.

Kinds:
  new_device      a MAC never seen before, once the learning period after the first start is
                  over; randomized MACs follow the configured policy.
  address_change  an IP address moved to another MAC, or back again (a flip-flop, as arpwatch
                  calls it).
  fan_out         a device reached many first-seen ports or peers in a tick: the shape of a scan.
  connect_rate    a device's connection attempts (SYNs) or a command's connect() calls far above
                  its own normal. A device whose burst is already reported as fan_out is not
                  reported twice: a scan is one alert, of the kind that says what it is.
Every (kind, subject) has a cooldown, so one storm is one alert.

Rates and fan-out fire after `consecutive_ticks` anomalous ticks in a row, or at once on a burst
(alerting/burst.py); what is normal for the current hour of the week is excused
(alerting/seasonality.py). New devices and address moves go through alerting/address_moves.py,
so a MAC change is one address_change whatever order its frames arrive in. During the learning
period neither new devices nor fan-out alert: after the first start everything on the LAN is
first-seen.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from netwatchd.alerting.address_moves import AddressMoves, Change
from netwatchd.alerting.alerts import Alert, AlertIds
from netwatchd.alerting.baseline import Anomaly, BaselineParams, BaselineTable
from netwatchd.alerting.burst import burst_count
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.seasonality import SeasonalProfile, excuse
from netwatchd.config import AlertsConfig

TABLES = ("device_connects", "command_connects", "device_fan_out")


class Detector:
    def __init__(self, cfg: AlertsConfig, ids: AlertIds, learning_until_usec: int):
        self.cfg = cfg
        self.ids = ids
        self.learning_until_usec = learning_until_usec
        self.tables: Dict[str, BaselineTable] = {name: BaselineTable() for name in TABLES}
        self.last_alert_usec: Dict[Tuple[str, str], int] = {}
        self.moves = AddressMoves()
        self.seasons: Dict[str, SeasonalProfile] = self._seasons(cfg)

    @staticmethod
    def _seasons(cfg: AlertsConfig) -> Dict[str, SeasonalProfile]:
        if not cfg.seasonality:
            return {}
        return {name: SeasonalProfile(cfg.seasonality_period_sec, cfg.seasonality_slot_sec, cfg.seasonality_weight,
                                      cfg.seasonality_max_keys) for name in TABLES}

    def reconfigure(self, cfg: AlertsConfig, learning_until_usec: int) -> None:
        """New thresholds apply from the next tick; what was learnt stays (seasonal profiles
        too, unless their period or slot changed: then they are learnt again)."""
        old = self.cfg
        self.cfg = cfg
        self.learning_until_usec = learning_until_usec
        geometry = lambda c: (c.seasonality, c.seasonality_period_sec, c.seasonality_slot_sec)  # noqa: E731
        if geometry(old) != geometry(cfg):
            self.seasons = self._seasons(cfg)
        for season in self.seasons.values():
            season.weight, season.max_keys = cfg.seasonality_weight, cfg.seasonality_max_keys

    def learning(self, now_usec: int) -> bool:
        return now_usec < self.learning_until_usec

    def _params(self, table: str, floor: int, cold: int) -> BaselineParams:
        c = self.cfg
        return BaselineParams(c.ewma_alpha, c.z_threshold, c.min_stddev, c.warmup_ticks, float(floor),
                              float(cold), c.consecutive_ticks, c.burst_score, burst_count(c, table))

    def _score(self, table: str, observed: Dict[str, float], floor: int, cold: int, now: int) -> List[Anomaly]:
        """One table's tick: rolling baseline, then what the current slot of the period excuses."""
        t = self.tables[table]
        x = t.dense(observed)
        season = self.seasons.get(table)
        if season is not None:
            season.advance(now)
        anomalies = t.update_dense(x, self._params(table, floor, cold))
        if season is not None:
            anomalies = excuse(season, anomalies, t.slot, self.cfg.z_threshold, self.cfg.min_stddev)
            season.accumulate(x)
        return anomalies

    def tick(self, obs: TickObservation) -> List[Alert]:
        c = self.cfg
        now = obs.time_usec
        # baselines learn every tick, whether alerts are on or not
        fan = {mac: max(obs.device_new_peers.get(mac, 0), obs.device_new_ports.get(mac, 0))
               for mac in set(obs.device_new_peers) | set(obs.device_new_ports)}
        fan_out = self._score("device_fan_out", fan, c.fan_out_floor, c.fan_out_floor, now)
        device_rate = self._score("device_connects", obs.device_connects, c.device_connect_floor,
                                  c.cold_connect_rate, now)
        command_rate = self._score("command_connects", obs.command_connects, c.process_connect_floor,
                                   c.cold_connect_rate, now)
        new_devices, moves = self.moves.step(now, obs.new_devices, obs.address_changes)
        if not c.enabled:
            return []
        alerts: List[Alert] = []
        # a new MAC that took over a known address is that address changing hands (arpwatch's
        # "changed ethernet address"), reported as address_change, not as a new device too
        ready_randomized = sum(1 for d in new_devices if d.get("randomized"))
        for dev in new_devices:
            alerts += self._new_device(now, dev, ready_randomized)
        for group in moves:
            alerts += self._address_change(now, group)
        scanning = set()
        for a in fan_out:
            scanning.add(a.key)
            if not self.learning(now):  # at the first start every pattern on the LAN is first-seen
                alerts += self._fan_out(now, a, obs)
        for a in device_rate:
            if a.key in scanning or self._cooling(("fan_out", f"device:{a.key}"), now):
                continue
            alerts += self._rate(now, f"device:{a.key}", a, "connection attempts (SYNs)", {"mac": a.key})
        for a in command_rate:
            details = {"command": a.key, "failed": str(obs.command_failed.get(a.key, 0)),
                       "pids": " ".join(map(str, sorted(obs.command_pids.get(a.key, []))))}
            alerts += self._rate(now, f"command:{a.key}", a, "connect() calls", details)
        return alerts

    # -- one kind each -----------------------------------------------------------------------
    def _cooling(self, key: Tuple[str, str], now: int) -> bool:
        last = self.last_alert_usec.get(key)
        return last is not None and now - last < self.cfg.cooldown_sec * 1_000_000

    def _raise(self, now: int, kind: str, subject: str, message: str, observed=0.0, baseline=0.0,
               score=0.0, details: Optional[Dict[str, str]] = None) -> List[Alert]:
        if self._cooling((kind, subject), now):
            return []
        self.last_alert_usec[(kind, subject)] = now
        return [Alert(self.ids.next(), kind, subject, now, message, round(observed, 3), round(baseline, 3),
                      round(score, 3), dict(details or {}))]

    def _new_device(self, now: int, dev: Dict, randomized_count: int) -> List[Alert]:
        if self.learning(dev.get("seen_usec", now)):
            return []
        mac = dev["mac"]
        where = ", ".join(x for x in [dev.get("interface", "")] + dev.get("ipv4", []) + dev.get("ipv6", []) if x)
        details = {"mac": mac, "vendor": dev.get("vendor", ""), "randomized": str(bool(dev.get("randomized"))).lower(),
                   "interface": dev.get("interface", "")}
        if dev.get("randomized"):
            if self.cfg.randomized_macs == "ignore":
                return []
            if self.cfg.randomized_macs == "once":
                count = randomized_count
                return self._raise(now, "new_device", "randomized-macs",
                                   f"new device(s) with randomized MACs, latest {mac}"
                                   f"{' on ' + where if where else ''} ({count} this tick)",
                                   observed=count, details=details)
        vendor = dev.get("vendor") or ("randomized MAC" if dev.get("randomized") else "unknown vendor")
        return self._raise(now, "new_device", f"device:{mac}",
                           f"new device {mac} ({vendor}){' on ' + where if where else ''}", observed=1,
                           details=details)

    def _address_change(self, now: int, group: List[Change]) -> List[Alert]:
        """One group of moves from one MAC to another (address_moves.py): one alert."""
        change, others = group[0], [c["ip"] for c in group[1:]]
        ip, old, new = change["ip"], change["old_mac"], change["new_mac"]
        pair = ("address_change", f"macs:{old}>{new}")  # the same change seen on another address
        if self._cooling(pair, now):
            return []
        if change.get("flip_flop"):
            message = f"flip flop: {ip} went back from {old} to {new}"
        else:
            message = f"{ip} moved from {old} to {new}"
        details = {"ip": ip, "old_mac": old, "new_mac": new, "flip_flop": str(bool(change.get("flip_flop"))).lower()}
        if others:
            message += f" (with {', '.join(others)})"
            details["other_ips"] = " ".join(others)
        raised = self._raise(now, "address_change", f"ip:{ip}", message, details=details)
        if raised:
            self.last_alert_usec[pair] = now
        return raised

    def _fan_out(self, now: int, a: Anomaly, obs: TickObservation) -> List[Alert]:
        peers, ports = obs.device_new_peers.get(a.key, 0), obs.device_new_ports.get(a.key, 0)
        message = (f"device {a.key} reached {ports} new ports and {peers} new peers in a tick "
                   f"(normal {a.baseline:.1f}, score {a.score:.1f}): the shape of a scan")
        return self._raise(now, "fan_out", f"device:{a.key}", message, a.observed, a.baseline, a.score,
                           {"mac": a.key, "new_ports": str(ports), "new_peers": str(peers)})

    def _rate(self, now: int, subject: str, a: Anomaly, what: str, details: Dict[str, str]) -> List[Alert]:
        name = subject.split(":", 1)[1]
        normal = f"normal {a.baseline:.1f}, score {a.score:.1f}" if a.warmed_up else "not learnt yet"
        message = f"{subject.split(':')[0]} {name} made {a.observed:.0f} {what} in a tick ({normal})"
        return self._raise(now, "connect_rate", subject, message, a.observed, a.baseline, a.score, details)

    # -- persistence ------------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        out: Dict[str, np.ndarray] = {}
        for name, table in self.tables.items():
            for field, value in table.state().items():
                out[f"{name}.{field}"] = value
        keys = list(self.last_alert_usec)
        out["cooldown.kind"] = np.asarray([k[0] for k in keys], dtype=str)
        out["cooldown.subject"] = np.asarray([k[1] for k in keys], dtype=str)
        out["cooldown.usec"] = np.asarray([self.last_alert_usec[k] for k in keys], dtype=np.int64)
        out.update(self.moves.state())
        for name, season in self.seasons.items():
            for field, value in season.state().items():
                out[f"season.{name}.{field}"] = value
        return out

    def load_state(self, state: Dict[str, np.ndarray]) -> None:
        for name in TABLES:
            if f"{name}.keys" in state:
                self.tables[name] = BaselineTable.from_state(
                    {f: state[f"{name}.{f}"] for f in ("keys", "mean", "var", "ticks")})
        if "cooldown.kind" in state:
            for kind, subject, usec in zip(state["cooldown.kind"], state["cooldown.subject"], state["cooldown.usec"]):
                self.last_alert_usec[(str(kind), str(subject))] = int(usec)
        self.moves.load_state(state)
        for name, season in self.seasons.items():
            prefix = f"season.{name}."
            saved = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if saved and not season.load_state(saved, self.tables[name].slot):
                self.seasons[name] = SeasonalProfile(*season.geometry(), season.weight, season.max_keys)
