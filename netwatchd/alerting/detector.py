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
  mac_flood       many new MACs on one interface in a few ticks (macof): one alert, and the
                  flood's MACs are no new_device each (alerting/mac_flood.py).
Every (kind, subject) has a cooldown, so one storm is one alert.

Rates and fan-out fire after `consecutive_ticks` anomalous ticks in a row, or at once on a burst
(alerting/burst.py); what is normal for the current hour of the week is excused
(alerting/seasonality.py). New devices and address moves go through alerting/address_moves.py,
so a MAC change is one address_change whatever order its frames arrive in. During the learning
period neither new devices, fan-out nor MAC floods alert: after the first start everything on
the LAN is first-seen.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from netwatchd.alerting.address_moves import AddressMoves, Change
from netwatchd.alerting.alerts import Alert, AlertIds
from netwatchd.alerting.baseline import Anomaly, BaselineParams, BaselineTable
from netwatchd.alerting.burst import burst_count
from netwatchd.alerting.mac_flood import Flood, MacFloods
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.seasonality import SeasonalProfile
from netwatchd.config import AlertsConfig

TABLES = ("device_connects", "command_connects", "device_fan_out")
PRUNE_EVERY_USEC = 60 * 1_000_000  # idle keys and spent cooldowns go once a minute (of tick time)
# The idle clock (`watched_usec`) advances by the time between ticks, but at most this much a
# tick: a daemon stopped, a host suspended, is not the keys' idle time.
MAX_TICK_GAP_USEC = 120 * 1_000_000


def fan_out_values(obs: TickObservation) -> Dict[str, int]:
    """Per device, what the fan-out baseline learns: its first-seen peers or ports this tick,
    whichever is more."""
    return {mac: max(obs.device_new_peers.get(mac, 0), obs.device_new_ports.get(mac, 0))
            for mac in set(obs.device_new_peers) | set(obs.device_new_ports)}


class Detector:
    def __init__(self, cfg: AlertsConfig, ids: AlertIds, learning_until_usec: int):
        self.cfg = cfg
        self.ids = ids
        self.learning_until_usec = learning_until_usec
        self.tables: Dict[str, BaselineTable] = {name: BaselineTable() for name in TABLES}
        self.last_alert_usec: Dict[Tuple[str, str], int] = {}
        self.moves = AddressMoves()
        self.floods = MacFloods()
        self.seasons: Dict[str, SeasonalProfile] = self._seasons(cfg)
        self.watched_usec = 0  # the idle clock: tick time watched (MAX_TICK_GAP_USEC)
        self._watched_at: Optional[int] = None  # tick time it was last advanced at
        self._pruned_minute: Optional[int] = None
        self.cooldowns_pruned = 0  # (kind, subject) cooldowns forgotten once spent

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
        """One table's tick: the rolling baseline scores it, then the seasonal profile (if any)
        excuses what is normal for the current slot of the period (SeasonalProfile.step)."""
        t = self.tables[table]
        x, moved = t.observe(observed, self._watch(now), self.cfg.max_baseline_keys)
        anomalies = t.update_dense(x, self._params(table, floor, cold))
        season = self.seasons.get(table)
        if season is None:
            return anomalies
        return season.step(now, x, moved, anomalies, t.slot, self.cfg.z_threshold, self.cfg.min_stddev)

    def tick(self, obs: TickObservation) -> List[Alert]:
        c = self.cfg
        now = obs.time_usec
        # baselines learn every tick, whether alerts are on or not
        fan_out = self._score("device_fan_out", fan_out_values(obs), c.fan_out_floor, c.fan_out_floor, now)
        device_rate = self._score("device_connects", obs.device_connects, c.device_connect_floor,
                                  c.cold_connect_rate, now)
        command_rate = self._score("command_connects", obs.command_connects, c.process_connect_floor,
                                   c.cold_connect_rate, now)
        self.prune(now)  # bounded tables: idle baseline keys, spent cooldowns (issue 21)

        new_devices, moves = self.moves.step(now, obs.new_devices, obs.address_changes, obs.devices_ipv4_shown)
        floods = self.floods.step(obs.new_devices, c.mac_flood_window_ticks, c.mac_flood_new_macs)
        new_devices = self.floods.sort(new_devices, c.mac_flood_new_macs)
        released = self.floods.released(obs.devices_confirmed)
        if not c.enabled:
            return []
        alerts: List[Alert] = []
        if not self.learning(now):  # at the first start the whole LAN is new at once
            for flood in floods:
                alerts += self._mac_flood(now, flood, c.mac_flood_window_ticks)
        # a new MAC that took over a known address is that address changing hands (arpwatch's
        # "changed ethernet address"), reported as address_change, not as a new device too
        ready_randomized = sum(1 for d in new_devices if d.get("randomized"))
        for dev in new_devices:
            alerts += self._new_device(now, dev, ready_randomized)
        for dev in released:
            alerts += self._new_device(now, dev, sum(1 for d in released if d.get("randomized")))
        for group in moves:
            alerts += self._address_change(now, group)
        scanning = set()
        for a in fan_out:
            scanning.add(a.key)
            if not self.learning(now):  # at the first start every pattern on the LAN is first-seen
                alerts += self._fan_out(now, a, obs)
        for a in device_rate:
            if a.key in scanning or self.cooling(("fan_out", f"device:{a.key}"), now):
                continue
            alerts += self._rate(now, f"device:{a.key}", a, "connection attempts (SYNs)", {"mac": a.key})
        for a in command_rate:
            details = {"command": a.key, "failed": str(obs.command_failed.get(a.key, 0)),
                       "pids": " ".join(map(str, sorted(obs.command_pids.get(a.key, []))))}
            alerts += self._rate(now, f"command:{a.key}", a, "connect() calls", details)
        return alerts

    # -- bounds (issue 21) -------------------------------------------------------------------
    def _watch(self, now: int) -> int:
        """The idle clock at tick time `now`: the time between ticks, at most MAX_TICK_GAP_USEC
        each (never backwards). From the ticks' own times, so a replay keeps the same clock."""
        if now != self._watched_at:
            if self._watched_at is not None:
                self.watched_usec += min(max(now - self._watched_at, 0), MAX_TICK_GAP_USEC)
            self._watched_at = now
        return self.watched_usec

    def prune(self, now: int) -> None:
        """Once per minute of tick time (whole minutes, so a replay prunes at the same ticks):
        baseline keys idle longer than baseline_idle_sec, or beyond max_baseline_keys, go (their
        seasonal rows with them), and so do cooldowns that can no longer suppress anything."""
        minute = now // PRUNE_EVERY_USEC
        if minute == self._pruned_minute:
            return
        self._pruned_minute = minute
        watched, c = self._watch(now), self.cfg
        for name, table in self.tables.items():
            moved = table.prune(watched, c.baseline_idle_sec * 1_000_000, c.max_baseline_keys)
            if moved is not None and name in self.seasons:
                self.seasons[name].remap(moved)
        self._prune_cooldowns(now)

    def _prune_cooldowns(self, now: int) -> None:
        spent = now - self.cfg.cooldown_sec * 1_000_000
        before = len(self.last_alert_usec)
        self.last_alert_usec = {key: usec for key, usec in self.last_alert_usec.items() if usec > spent}
        self.cooldowns_pruned += before - len(self.last_alert_usec)

    def pruned_counts(self) -> Dict[str, int]:
        """What the bounds dropped since the start, for metrics: per table `<table>.pruned` (idle
        too long), `.evicted` (pushed out by max_baseline_keys), `.refused` (new keys beyond it in
        one tick), `.keys` (held now); `cooldowns` (spent, forgotten); `seasonal_rows`."""
        out: Dict[str, int] = {}
        for name, t in self.tables.items():
            out.update({f"{name}.pruned": t.pruned, f"{name}.evicted": t.evicted,
                        f"{name}.refused": t.refused, f"{name}.keys": len(t)})
        out["cooldowns"] = self.cooldowns_pruned
        out["seasonal_rows"] = sum(s.dropped_rows for s in self.seasons.values())
        return out

    # -- one kind each -----------------------------------------------------------------------
    def cooling(self, key: Tuple[str, str], now: int) -> bool:
        """Whether (kind, subject) alerted within alerts.cooldown_sec (the core asks it for fan_out,
        so that a scan already reported as fan_out is not a port_scan too)."""
        last = self.last_alert_usec.get(key)
        return last is not None and now - last < self.cfg.cooldown_sec * 1_000_000

    def _raise(self, now: int, kind: str, subject: str, message: str, observed=0.0, baseline=0.0,
               score=0.0, details: Optional[Dict[str, str]] = None) -> List[Alert]:
        if self.cooling((kind, subject), now):
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
        if dev.get("during_mac_flood"):  # first seen in a flood; it kept talking since
            details["during_mac_flood"] = "true"
            where += " (joined during a MAC flood there)"
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

    def _mac_flood(self, now: int, flood: Flood, window_ticks: int) -> List[Alert]:
        message = (f"MAC flood on {flood.interface or '?'}: {flood.count} new MACs in {window_ticks} ticks "
                   f"(e.g. {', '.join(flood.samples[:3])}); none is reported as a new device unless it keeps talking")
        details = {"interface": flood.interface, "count": str(flood.count), "window_ticks": str(window_ticks),
                   "randomized": str(flood.randomized), "samples": " ".join(flood.samples)}
        return self._raise(now, "mac_flood", f"interface:{flood.interface}", message, observed=flood.count,
                           baseline=self.cfg.mac_flood_new_macs, details=details)

    def _address_change(self, now: int, group: List[Change]) -> List[Alert]:
        """One group of moves from one MAC to another (address_moves.py): one alert."""
        change, others = group[0], [c["ip"] for c in group[1:]]
        ip, old, new = change["ip"], change["old_mac"], change["new_mac"]
        pair = ("address_change", f"macs:{old}>{new}")  # the same change seen on another address
        if self.cooling(pair, now):
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
        out["watch"] = np.asarray([self.watched_usec, -1 if self._watched_at is None else self._watched_at],
                                  dtype=np.int64)
        keys = list(self.last_alert_usec)
        out["cooldown.kind"] = np.asarray([k[0] for k in keys], dtype=str)
        out["cooldown.subject"] = np.asarray([k[1] for k in keys], dtype=str)
        out["cooldown.usec"] = np.asarray([self.last_alert_usec[k] for k in keys], dtype=np.int64)
        out.update(self.moves.state())
        out.update(self.floods.state())
        for name, season in self.seasons.items():
            for field, value in season.state().items():
                out[f"season.{name}.{field}"] = value
        return out

    def load_state(self, state: Dict[str, np.ndarray]) -> None:
        for name in TABLES:
            if f"{name}.keys" in state:
                self.tables[name] = BaselineTable.from_state(
                    {f: state[f"{name}.{f}"] for f in ("keys", "mean", "var", "ticks", "last_seen")
                     if f"{name}.{f}" in state})
        if "watch" in state:  # saved without it: the idle clock starts at 0, as its stamps (baseline.py)
            self.watched_usec, at = (int(v) for v in state["watch"])
            self._watched_at = None if at < 0 else at
            if at >= 0:  # pruned in that minute already: next at the next minute, as a replay would
                self._pruned_minute = at // PRUNE_EVERY_USEC
        if "cooldown.kind" in state:
            for kind, subject, usec in zip(state["cooldown.kind"], state["cooldown.subject"], state["cooldown.usec"]):
                self.last_alert_usec[(str(kind), str(subject))] = int(usec)
            if self.last_alert_usec:  # the clock now is at least the newest alert's
                self._prune_cooldowns(max(self.last_alert_usec.values()))
        self.moves.load_state(state)
        self.floods.load_state(state, self.cfg.mac_flood_window_ticks)
        for name, season in self.seasons.items():
            prefix = f"season.{name}."
            saved = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if saved and not season.load_state(saved, self.tables[name].slot):
                self.seasons[name] = SeasonalProfile(*season.geometry(), season.weight, season.max_keys)
