"""Beacon benchmarks (issues 14 and 24), user space, each figure beside its floor from the same run.

    .venv/bin/python bench/beacon_bench.py            (make bench-beacons; a few minutes)
    .venv/bin/python bench/beacon_bench.py --quick    (smoke check)
    .venv/bin/python bench/beacon_bench.py --before REV   (the tracker to set beside: REV's, default HEAD)

  0. The tracker before (issue 24) and now, side by side: bytes a tracked pair holds at 100k pairs
     (memory_bytes(), tracemalloc's count and the process's RSS growth, each in a fresh process
     of its own), and a tick's time for 100k starts of 100k new pairs, then of the same pairs
     again a second later. The tracker before is REV's netwatchd/alerting/beacons.py (read with
     `git show`, nothing in git changed) run as a module of this process only; it takes lists
     (connection_starts), the tracker now takes columns (command_starts) and lists (converted).
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
import ctypes
import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import types
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netwatchd.alerting.alerts import AlertIds  # noqa: E402
from netwatchd.alerting.beacons import KEEP, BeaconTracker  # noqa: E402
from netwatchd.alerting.detector import Detector  # noqa: E402
from netwatchd.alerting.observation import TickObservation  # noqa: E402
from netwatchd.config import AlertsConfig, BeaconsConfig  # noqa: E402
from netwatchd.start_columns import StartColumns  # noqa: E402

SHIPPED = BeaconsConfig()
T0 = 1_700_000_000.0
SOURCES = [f"command:c{i}" for i in range(500)]


# -- 0. before and now ------------------------------------------------------------------------

def tracker_before(rev: str) -> Optional[type]:
    """REV's BeaconTracker, from `git show` into a module of this process (None: no git, or
    REV's is already the columnar one)."""
    try:
        text = subprocess.run(["git", "show", f"{rev}:netwatchd/alerting/beacons.py"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("beacons_before")
    sys.modules[module.__name__] = module  # its dataclasses look their module up
    exec(compile(text, f"{rev}:netwatchd/alerting/beacons.py", "exec"), module.__dict__)
    return None if hasattr(module, "StartColumns") else module.BeaconTracker


def addresses(pairs: int) -> np.ndarray:
    k = np.arange(pairs)
    out = np.zeros((pairs, 16), np.uint8)
    out[:, :4] = np.stack([np.full(pairs, 10), (k >> 16) & 255, (k >> 8) & 255, k & 255], axis=1)
    return out


def starts(pairs: int, when: np.ndarray, as_lists: bool):
    """Pair i: source c{i % 500}, 10.x.y.z (i), port 443; its start times `when[i]` (usec, one
    row each): as columns (the connect monitor's command_starts) or as connection_starts lists."""
    when = np.asarray(when, np.int64).reshape(pairs, -1)
    if as_lists:
        return [[SOURCES[i % 500], f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 443, "", when[i].tolist()]
                for i in range(pairs)]
    per = when.shape[1]
    pair = np.repeat(np.arange(pairs), per)
    return StartColumns(SOURCES, (pair % 500).astype(np.int32), np.full(len(pair), 4, np.uint8),
                        addresses(pairs)[pair], np.full(len(pair), 443, np.uint16), when.reshape(-1))


def two_ticks(pairs: int, as_lists: bool):
    """(now, starts) of a tick of `pairs` new pairs (one start each) and of the same a second later."""
    return [(int((T0 + s) * 1e6), starts(pairs, np.full(pairs, int((T0 + s - 0.5) * 1e6)), as_lists)) for s in (0, 1)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def held(which: str, rev: str, pairs: int, traced: bool) -> Dict[str, float]:
    """In a fresh process: what a tracker (`before` or `now`) holds per pair after two_ticks."""
    cls = tracker_before(rev) if which == "before" else BeaconTracker
    warm = cls(dataclasses.replace(SHIPPED, max_pairs=pairs))  # the code paths paged in: not the tracker's
    for now, s in two_ticks(min(pairs, 2000), as_lists=which == "before"):
        warm.tick(s, now, AlertIds(0))
    del warm
    ticks = two_ticks(pairs, as_lists=which == "before")  # built first: not the tracker's
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    if traced:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if traced else rss_bytes()
    tracker = cls(dataclasses.replace(SHIPPED, max_pairs=pairs))
    for now, s in ticks:
        tracker.tick(s, now, AlertIds(0))
    gc.collect()
    grown = (tracemalloc.get_traced_memory()[0] if traced else rss_bytes()) - base
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the daemon does after a big tick
    trimmed = (tracemalloc.get_traced_memory()[0] if traced else rss_bytes()) - base
    return {"pairs": len(tracker), "memory_bytes": tracker.memory_bytes() / len(tracker), "grown": grown / len(tracker),
            "trimmed": trimmed / len(tracker)}


def held_in_child(which: str, rev: str, pairs: int, traced: bool) -> Dict[str, float]:
    args = [sys.executable, __file__, "--child", which, "--before", rev, "--pairs", str(pairs)]
    out = subprocess.run(args + (["--traced"] if traced else []), check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def tick_ms(make, pairs: int, as_lists: bool, reps: int) -> List[float]:
    """Median ms of a tick of `pairs` new pairs and of the repeat tick, over `reps` fresh trackers."""
    took = [[], []]
    for _ in range(reps):
        tracker = make(dataclasses.replace(SHIPPED, max_pairs=pairs))
        for i, (now, s) in enumerate(two_ticks(pairs, as_lists)):
            gc.collect()
            t = time.perf_counter()
            tracker.tick(s, now, AlertIds(0))
            took[i].append(1000 * (time.perf_counter() - t))
    return [float(np.median(x)) for x in took]


def before_and_now(rev: str, pairs: int, reps: int) -> None:
    before = tracker_before(rev)
    if before is None:
        print(f"   (no tracker before to set beside: {rev}'s beacons.py is the columnar one, or no git;"
              " --before REV names another)")
    rows = ([("before, lists", before, True)] if before else []) + [("now, columns", BeaconTracker, False),
                                                                     ("now, lists", BeaconTracker, True)]
    print(f"   {'tracker':<15} {'new pairs ms':>12} {'repeats ms':>11}")
    for name, make, as_lists in rows:
        new, again = tick_ms(make, pairs, as_lists, reps)
        print(f"   {name:<15} {new:>12.1f} {again:>11.1f}")
    print(f"   {'bytes a pair':<15} {'memory_bytes':>12} {'tracemalloc':>11} {'RSS growth':>11} {'after trim':>11}")
    for which in (["before"] if before else []) + ["now"]:
        rss, traced = held_in_child(which, rev, pairs, False), held_in_child(which, rev, pairs, True)
        note = " (memory_bytes: its arrays only)" if which == "before" else ""
        print(f"   {which:<15} {rss['memory_bytes']:>12.1f} {traced['grown']:>11.1f} {rss['grown']:>11.1f}"
              f" {rss['trimmed']:>11.1f}{note}")
    print("   (RSS growth: the ticks' freed working memory too, which glibc keeps until malloc_trim(),"
          " as the daemon calls after a big tick)")


# -- 1. per tick, 100k pairs ------------------------------------------------------------------

def fill(tracker: BeaconTracker, pairs: int, now: float) -> None:
    """Every pair gets KEEP starts at random times in the last half hour (no alert: random), filed
    over KEEP / 8 ticks of 8 starts each."""
    rng = np.random.default_rng(1)
    times = np.sort(now - rng.uniform(0, 1800, (pairs, KEEP)), axis=1)
    for j in range(0, KEEP, 8):
        tracker.tick(starts(pairs, (times[:, j:j + 8] * 1e6).astype(np.int64), False), int(now * 1e6), AlertIds(0))


def per_tick(pairs: int, active: int, ticks: int) -> Dict[str, float]:
    fill(BeaconTracker(SHIPPED), 1000, T0)  # numpy's first uses load modules: not the tracker's
    tracemalloc.start()
    tracker = BeaconTracker(dataclasses.replace(SHIPPED, max_pairs=pairs))
    now = T0
    fill(tracker, pairs, now)
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    rng = np.random.default_rng(2)
    ids = AlertIds(0)
    every = starts(pairs, np.zeros(pairs), False)
    took = []
    for n in range(ticks):
        now += 1.0
        chosen = np.sort(rng.choice(pairs, active, replace=False))
        tick = StartColumns(SOURCES, every.source[chosen], every.family[chosen], every.address[chosen],
                            every.port[chosen], np.full(active, int((now - 0.5) * 1e6), np.int64))
        t = time.perf_counter()
        tracker.tick(tick, int(now * 1e6), ids)
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
    p.add_argument("--before", default="HEAD", help="the git revision whose tracker section 0 sets beside")
    p.add_argument("--child", choices=("before", "now"), help=argparse.SUPPRESS)
    p.add_argument("--pairs", type=int, default=100_000, help=argparse.SUPPRESS)
    p.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(held(args.child, args.before, args.pairs, args.traced)))
        return 0
    pairs, runs, hours = (20_000, 50, 6) if args.quick else (100_000, 300, 24)

    print(f"0. the tracker before ({args.before}) and now: {pairs} pairs, one start each a tick")
    before_and_now(args.before, pairs, reps=2 if args.quick else 5)

    print(f"1. per tick, {pairs} pairs tracked, 1000 with a new start each tick")
    r = per_tick(pairs, active=1000, ticks=10 if args.quick else 30)
    print(f"   beacon tracker tick {r['tick_ms']:.2f} ms | floor: detector tick over 1000 keys {r['floor_ms']:.2f} ms"
          f" | ratio {r['tick_ms'] / r['floor_ms']:.2f}")
    print(f"   memory: memory_bytes() {r['arrays_mib']:.1f} MiB, tracemalloc {r['python_mib']:.1f} MiB"
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
