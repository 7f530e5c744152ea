"""Beacon benchmarks (issue 14), user space, each figure beside its floor from the same run.

    .venv/bin/python bench/beacon_bench.py            (make bench-beacons; about a minute)
    .venv/bin/python bench/beacon_bench.py --quick    (smoke check)

  1. Per-tick CPU and memory of the beacon tracker holding 100k pairs (each with a full ring of
     starts), ticks of ACTIVE pairs with a new start each; beside the floor: the existing
     detector's tick over an observation of as many commands and devices.
  2. Detection latency, in periods, for 0%, 10%, 25% and 50% uniform jitter (shipped defaults),
     beside the same number of connections at random (Poisson) times: how often those alert.
  3. False alerts per hour on a synthesized quiet Debian host (24 h: NTP polls 64..1024 s, the
     local resolver, an upstream resolver, apt twice a day, a mail client polling every 10 min,
     random browsing), with the shipped allow-list and without it.
The kernel's share (ns per SYN of the beacon_pairs map) is bench/beacon_kernel_bench.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netwatchd.alerting.alerts import AlertIds  # noqa: E402
from netwatchd.alerting.beacons import KEEP, BeaconTracker  # noqa: E402
from netwatchd.alerting.detector import Detector  # noqa: E402
from netwatchd.alerting.observation import TickObservation  # noqa: E402
from netwatchd.config import AlertsConfig, BeaconsConfig  # noqa: E402

SHIPPED = BeaconsConfig()
T0 = 1_700_000_000.0


# -- 1. per tick, 100k pairs ------------------------------------------------------------------

def fill(tracker: BeaconTracker, pairs: int, now: float) -> None:
    """Every pair gets KEEP starts at random times in the last half hour (no alert: random)."""
    rng = np.random.default_rng(1)
    ids = AlertIds(0)
    batch = 5000
    for base in range(0, pairs, batch):
        n = min(batch, pairs - base)
        times = np.sort(now - rng.uniform(0, 1800, (n, KEEP)), axis=1)
        starts = [[f"command:c{(base + i) % 500}", f"10.{(base + i) >> 16 & 255}.{(base + i) >> 8 & 255}.{(base + i) & 255}",
                   443, "", [int(t * 1e6) for t in times[i, -8:]]] for i in range(n)]
        tracker.tick(starts, int(now * 1e6), ids)
    # the rest of each ring, as if filed over earlier ticks
    used = np.arange(len(tracker._keys))
    tracker.starts[used] = ((np.sort(now - rng.uniform(0, 1800, (len(used), KEEP)), axis=1) * 1000)
                            - tracker.epoch_ms).astype(np.int32)
    tracker.filled[used] = KEEP


def per_tick(pairs: int, active: int, ticks: int) -> Dict[str, float]:
    tracemalloc.start()
    tracker = BeaconTracker(dataclasses.replace(SHIPPED, max_pairs=pairs))
    now = T0
    fill(tracker, pairs, now)
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    rng = np.random.default_rng(2)
    ids = AlertIds(0)
    keys = list(tracker._index)
    took = []
    for n in range(ticks):
        now += 1.0
        chosen = rng.choice(len(keys), active, replace=False)
        starts = [[keys[i][0], keys[i][1], keys[i][2], "", [int((now - 0.5) * 1e6)]] for i in chosen]
        t = time.perf_counter()
        tracker.tick(starts, int(now * 1e6), ids)
        took.append(time.perf_counter() - t)
    # the floor: the detector's own tick over as many commands and devices as active pairs
    det = Detector(AlertsConfig(), AlertIds(0), 0)
    floor = []
    for n in range(ticks):
        obs = TickObservation(time_usec=int((now + n) * 1e6),
                              command_connects={f"c{i}": 1 for i in range(active // 2)},
                              device_connects={f"02:00:00:00:{i >> 8 & 255:02x}:{i & 255:02x}": 1 for i in range(active // 2)})
        t = time.perf_counter()
        det.tick(obs)
        floor.append(time.perf_counter() - t)
    return {"pairs": len(tracker), "tick_ms": 1000 * float(np.median(took)), "floor_ms": 1000 * float(np.median(floor)),
            "arrays_mib": tracker.memory_bytes() / 2**20, "python_mib": memory / 2**20}


# -- 2. latency -------------------------------------------------------------------------------

def periods_to_alert(intervals: np.ndarray, cfg: BeaconsConfig = SHIPPED, tick: float = 1.0) -> int:
    """Periods from the first connection to the beacon alert (-1: none)."""
    tracker = BeaconTracker(cfg)
    ids = AlertIds(0)
    times = T0 + np.concatenate([[0.0], np.cumsum(intervals)])
    now, i = T0, 0
    while i < len(times):
        when = []
        while i < len(times) and times[i] <= now:
            when.append(int(times[i] * 1e6))
            i += 1
        if tracker.tick([["command:b", "203.0.113.5", 443, "", when]] if when else [], int(now * 1e6), ids):
            return int(np.sum(times <= now)) - 1
        now += tick
    return -1


def latency(runs: int, periods: int) -> List[Dict]:
    rng = np.random.default_rng(3)
    rows = []
    for jitter in (0.0, 0.1, 0.25, 0.5):
        taken = np.array([periods_to_alert(30.0 * (1 + jitter * rng.uniform(-1, 1, periods))) for _ in range(runs)])
        found = taken[taken >= 0]
        rows.append({"jitter": f"{jitter:.0%}", "found": len(found) / runs, "within_20": float(np.mean((taken >= 0) & (taken <= 20))),
                     "median": float(np.median(found)) if len(found) else None,
                     "p90": float(np.percentile(found, 90)) if len(found) else None})
    taken = np.array([periods_to_alert(rng.exponential(30.0, periods)) for _ in range(runs)])
    rows.append({"jitter": "Poisson", "found": float(np.mean(taken >= 0)), "within_20": float(np.mean((taken >= 0) & (taken <= 20))),
                 "median": None, "p90": None})
    return rows


# -- 3. a quiet host -------------------------------------------------------------------------

def quiet_host(hours: float, seed: int) -> Dict[tuple, List[float]]:
    """(source, destination, port) -> start times of a plain Debian desktop/server."""
    rng = np.random.default_rng(seed)
    end = T0 + hours * 3600
    pairs: Dict[tuple, List[float]] = {}

    def add(key, t):
        if t < end:
            pairs.setdefault(key, []).append(t)

    t, poll = T0, 64.0  # an NTP client: polls every 64..1024 s, the interval halved or doubled
    while t < end:    # after 4..16 polls at one level, as chrony and ntpd adapt it to the clock
        for _ in range(rng.integers(4, 17)):
            add(("command:chronyd", "192.0.2.123", 123), t)
            t += poll
        poll = float(np.clip(poll * rng.choice([0.5, 2.0]), 64.0, 1024.0))
    t = T0  # browsing: sessions at random, each a burst of connects to a few of 300 sites
    sites = [f"198.51.{i >> 8}.{i & 255}" for i in range(300)]
    popularity = 1 / np.arange(1, 301)
    popularity /= popularity.sum()
    while t < end:
        t += rng.exponential(300)
        for _ in range(rng.integers(1, 12)):
            site = sites[rng.choice(300, p=popularity)]
            start = t + rng.exponential(5)
            for k in range(rng.integers(1, 6)):
                add(("command:firefox-esr", site, 443), start + k * rng.exponential(0.3))
                add(("command:firefox-esr", "127.0.0.53", 53), start + k * rng.exponential(0.3) - 0.01)
            add(("command:systemd-resolve", "192.0.2.53", 53), start - 0.005)
    for day_hour in (6.3, 18.1):  # apt's twice-daily update check (apt-daily.timer, randomized)
        for day in range(int(hours // 24) + 1):
            t0 = T0 + (day * 24 + day_hour + rng.uniform(0, 12)) * 3600
            for k in range(4):
                add(("command:http", "151.101.2.132", 80), t0 + k * 0.2)
    t = T0  # a mail client polling IMAP every 10 minutes
    while t < end:
        add(("command:thunderbird", "203.0.113.143", 993), t)
        t += 600 + rng.uniform(-5, 5)
    t = T0  # ssh sessions, cron jobs: random single connects
    while t < end:
        t += rng.exponential(900)
        add(("command:ssh", f"10.0.0.{rng.integers(2, 9)}", 22), t)
    return {k: sorted(v) for k, v in pairs.items()}


def false_alerts_per_hour(hours: float, cfg: BeaconsConfig) -> float:
    pairs = quiet_host(hours, seed=4)
    events = sorted((t, k) for k, ts in pairs.items() for t in ts)
    tracker = BeaconTracker(cfg)
    ids = AlertIds(0)
    alerts, i, now = [], 0, T0
    while i < len(events):
        by_pair: Dict[tuple, List[int]] = {}
        while i < len(events) and events[i][0] <= now:
            by_pair.setdefault(events[i][1], []).append(int(events[i][0] * 1e6))
            i += 1
        starts = [[k[0], k[1], k[2], "", v] for k, v in by_pair.items()]
        alerts += tracker.tick(starts, int(now * 1e6), ids, True, 600)
        now += 1.0
    for a in alerts:
        print(f"    false alert: {a.message}")
    return len(alerts) / hours


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    pairs, runs, hours = (20_000, 50, 6) if args.quick else (100_000, 300, 24)

    print(f"1. per tick, {pairs} pairs tracked, 1000 with a new start each tick")
    r = per_tick(pairs, active=1000, ticks=10 if args.quick else 30)
    print(f"   beacon tracker tick {r['tick_ms']:.2f} ms | floor: detector tick over 1000 keys {r['floor_ms']:.2f} ms"
          f" | ratio {r['tick_ms'] / r['floor_ms']:.2f}")
    print(f"   memory: rings and arrays {r['arrays_mib']:.1f} MiB, with the Python index {r['python_mib']:.1f} MiB"
          f" ({r['python_mib'] * 2**20 / r['pairs']:.0f} bytes a pair)")

    print(f"2. detection latency in periods (30 s period, shipped defaults, {runs} runs each, 40 periods)")
    for row in latency(runs, 40):
        med = f"median {row['median']:.0f}, p90 {row['p90']:.0f}" if row["median"] is not None else ""
        print(f"   {row['jitter']:>7}: found {row['found']:.0%}, within 20 periods {row['within_20']:.0%} {med}")

    print(f"3. false alerts per hour, a quiet host replayed over {hours} h")
    shipped = false_alerts_per_hour(hours, SHIPPED)
    bare = false_alerts_per_hour(hours, dataclasses.replace(SHIPPED, allow_destinations=(), allow_names=(),
                                                            allow_commands=()))
    print(f"   shipped allow-list {shipped:.3f}/h | no allow-list {bare:.3f}/h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
