"""DNS anomalies per device (pure): NXDOMAIN bursts and tunnel-like names under one domain.

Input: each tick's `dns_activity` (netwatchd/devices/dns_tally.py): per device, the NXDOMAIN
answers to its own questions and the distinct names it asked, with how many looked like data
(long or random labels), per registered domain. Two kinds:
  dns_nxdomain_burst  at least alerts.dns_nxdomain_answers NXDOMAIN answers to one device within
                      alerts.dns_window_sec: a domain generation algorithm (DGA) probing for its
                      command server resolves hundreds of names that do not exist; a normal host
                      gets a few (a typo, a search-list expansion, Chrome's three random probes).
  dns_tunnel          at least alerts.dns_tunnel_names distinct tunnel-like names asked by one
                      device under one registered domain within the window: data carried in
                      query names (iodine, dnscat2). CDN hashes (a1b2c3.cloudfront.net) are short
                      and never count; a few long real names a minute stay far below.
Names under alerts.dns_allow_domains never count. One alert per (device, kind, domain) per
alerts.cooldown_sec (also across a restart: the restored alert log seeds it), none while
learning or with alerts off; the windows count either way.

Why windowed counts and not the detector's rolling baselines: these counts are ~0 on a normal
device, a baseline needs alerts.warmup_ticks of each device first (a freshly infected laptop
has none), and what matters is an absolute amount in a minute (the acceptance: 200 in a minute
alerts, 20 do not), whatever the tick length.

A window is six buckets of dns_window_sec / 6 on the observations' own clock, so a replay
counts the same. Bounded: at most MAX_WINDOWS (device, domain) windows and as many device
windows (and cooldowns); a window is made only for a device that got an NXDOMAIN or asked a tunnel-like
name, idle ones go at each pass, and when full the one updated longest ago makes room,
counted in `dropped` (AlertingCore.dropped: dns_windows_dropped).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Tuple

from netwatchd.alerting.alerts import Alert, AlertIds
from netwatchd.config import AlertsConfig
from netwatchd.dns_domains import domain_allowed

BUCKETS = 6
# (device, domain) windows, and as many device windows, counted at once: measured ~420 bytes a
# window with its key, ~6.5 MiB a table when full; only a device with an NXDOMAIN or a
# tunnel-like name gets one.
MAX_WINDOWS = 16384
NXDOMAIN_KIND = "dns_nxdomain_burst"
TUNNEL_KIND = "dns_tunnel"
MAX_SHOWN_DOMAINS = 5  # an NXDOMAIN burst's alert names the tick's busiest domains, this many

CooldownKey = Tuple[str, str, str]  # (mac, kind, domain; "" for NXDOMAIN)


class SlidingCounts:
    """Counts per key over the last BUCKETS buckets of `width_usec`, at most `capacity` keys
    (the one updated longest ago makes room, counted in `dropped`)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._windows: "OrderedDict[Any, List[int]]" = OrderedDict()  # key -> [last bucket, counts...]
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._windows)

    def add(self, key: Any, n: int, now_usec: int, width_usec: int) -> int:
        """Adds `n` at `now_usec`; the key's total within the window."""
        bucket = now_usec // width_usec
        window = self._windows.get(key)
        if window is None:
            self._make_room()
            window = self._windows[key] = [bucket] + [0] * BUCKETS
        self._advance(window, bucket)
        window[1 + bucket % BUCKETS] += n
        self._windows.move_to_end(key)
        return sum(window[1:])

    def prune(self, now_usec: int, width_usec: int) -> None:
        """Forgets windows with nothing left in them."""
        bucket = now_usec // width_usec
        for key in [k for k, w in self._windows.items() if bucket - w[0] >= BUCKETS]:
            del self._windows[key]

    def _make_room(self) -> None:
        while len(self._windows) >= self.capacity:
            self._windows.popitem(last=False)
            self.dropped += 1

    @staticmethod
    def _advance(window: List[int], bucket: int) -> None:
        """Empties the buckets between the window's last one and `bucket` (they are past)."""
        last = window[0]
        if bucket <= last:
            return
        for b in range(last + 1, min(bucket, last + BUCKETS) + 1):
            window[1 + b % BUCKETS] = 0
        window[0] = bucket


class DnsAnomalies:
    def __init__(self, cfg: AlertsConfig):
        self.cfg = cfg
        self.nxdomain = SlidingCounts(MAX_WINDOWS)
        self.tunnels = SlidingCounts(MAX_WINDOWS)
        self.last_alert_usec: Dict[CooldownKey, int] = {}
        self._pruned_bucket = -1

    @property
    def dropped(self) -> int:
        return self.nxdomain.dropped + self.tunnels.dropped

    def reconfigure(self, cfg: AlertsConfig) -> None:
        self.cfg = cfg

    def tick(self, activity: Dict[str, Dict[str, Any]], now_usec: int, ids: AlertIds, learning: bool) -> List[Alert]:
        """One tick's dns_activity: counted always; alerts only when enabled and not learning."""
        width = max(self.cfg.dns_window_sec * 1_000_000 // BUCKETS, 1)
        self._prune(now_usec, width)
        alerts: List[Alert] = []
        quiet = learning or not self.cfg.enabled
        for mac, fact in activity.items():
            nx_total, nx_domains = self._count_nxdomain(mac, fact.get("nxdomain", {}), fact.get("nxdomain_over", 0),
                                                        now_usec, width)
            if not quiet and nx_total >= self.cfg.dns_nxdomain_answers:
                alerts += self._nxdomain_alert(ids, now_usec, mac, nx_total, nx_domains)
            for domain, total, longest in self._count_tunnels(mac, fact.get("names", {}), now_usec, width):
                if not quiet and total >= self.cfg.dns_tunnel_names:
                    alerts += self._tunnel_alert(ids, now_usec, mac, domain, total, longest)
        return alerts

    # -- counting ----------------------------------------------------------------------------
    def _allowed(self, domain: str) -> bool:
        return domain_allowed(domain, self.cfg.dns_allow_domains)

    def _count_nxdomain(self, mac: str, by_domain: Dict[str, int], over: int, now: int,
                        width: int) -> Tuple[int, List[str]]:
        """The device's NXDOMAIN total in the window and this tick's busiest domains. Answers
        beyond the tally's domain bound count too (a DGA's names are each a domain of its own)."""
        counted = {d: n for d, n in by_domain.items() if n > 0 and not self._allowed(d)}
        if not counted and not over:
            return 0, []
        total = self.nxdomain.add(mac, sum(counted.values()) + over, now, width)
        busiest = sorted(counted, key=lambda d: (-counted[d], d))[:MAX_SHOWN_DOMAINS]
        return total, busiest

    def _count_tunnels(self, mac: str, by_domain: Dict[str, List[int]], now: int, width: int):
        for domain, (_, tunnel_like, longest) in by_domain.items():
            if tunnel_like > 0 and not self._allowed(domain):
                yield domain, self.tunnels.add((mac, domain), tunnel_like, now, width), longest

    def _prune(self, now: int, width: int) -> None:
        """Once a bucket: empty windows and spent cooldowns go."""
        bucket = now // width
        if bucket == self._pruned_bucket:
            return
        self._pruned_bucket = bucket
        self.nxdomain.prune(now, width)
        self.tunnels.prune(now, width)
        spent = now - self.cfg.cooldown_sec * 1_000_000
        self.last_alert_usec = {k: t for k, t in self.last_alert_usec.items() if t > spent}

    # -- alerts ------------------------------------------------------------------------------
    def _due(self, key: CooldownKey, now: int) -> bool:
        """True (and the cooldown starts) unless (device, kind, domain) alerted within it."""
        last = self.last_alert_usec.get(key)
        if last is not None and now - last < self.cfg.cooldown_sec * 1_000_000:
            return False
        if key not in self.last_alert_usec and len(self.last_alert_usec) >= MAX_WINDOWS:
            del self.last_alert_usec[min(self.last_alert_usec, key=self.last_alert_usec.get)]  # bounded too
        self.last_alert_usec[key] = now
        return True

    def _nxdomain_alert(self, ids: AlertIds, now: int, mac: str, total: int, domains: List[str]) -> List[Alert]:
        if not self._due((mac, NXDOMAIN_KIND, ""), now):
            return []
        window, threshold = self.cfg.dns_window_sec, self.cfg.dns_nxdomain_answers
        message = (f"device {mac} got {total} NXDOMAIN answers to its own lookups in {window} s (threshold "
                   f"{threshold}; e.g. under {', '.join(domains)}): names that do not exist, like a DGA probing")
        details = {"mac": mac, "count": str(total), "window_sec": str(window), "domains": " ".join(domains)}
        return [Alert(ids.next(), "dns_nxdomain_burst", f"device:{mac}", now, message, float(total),
                      float(threshold), round(total / threshold, 3), details)]

    def _tunnel_alert(self, ids: AlertIds, now: int, mac: str, domain: str, total: int, longest: int) -> List[Alert]:
        if not self._due((mac, TUNNEL_KIND, domain), now):
            return []
        window, threshold = self.cfg.dns_window_sec, self.cfg.dns_tunnel_names
        message = (f"device {mac} asked {total} distinct long or random names under {domain} in {window} s "
                   f"(threshold {threshold}, longest label {longest}): data carried in DNS names, like a tunnel")
        details = {"mac": mac, "domain": domain, "count": str(total), "window_sec": str(window),
                   "longest_label": str(longest)}
        return [Alert(ids.next(), "dns_tunnel", f"device:{mac}", now, message, float(total), float(threshold),
                      round(total / threshold, 3), details)]

    def remember(self, alerts: Iterable[Alert]) -> None:
        """Alerts raised before (a restored alert log) keep their cooldown."""
        for a in alerts:
            if a.kind in (NXDOMAIN_KIND, TUNNEL_KIND):
                key = (a.details.get("mac", ""), a.kind, a.details.get("domain", ""))
                self.last_alert_usec[key] = max(self.last_alert_usec.get(key, 0), a.timestamp_usec)
