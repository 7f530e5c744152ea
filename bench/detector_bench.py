"""Issue 4's benchmark: baseline update plus scoring per tick for 100k keys, side by side in one run.

    .venv/bin/python bench/detector_bench.py             (make bench-alerts; no root; ~30 s)
    .venv/bin/python bench/detector_bench.py --quick     (smoke check: 10k keys, 10 ticks)

Every timed tick runs, one after the other on the same tick's data:
  1. numpy   BaselineTable.update_dense over all keys (the arithmetic of the hot path);
  2. python  a per-key pure-Python loop doing the same arithmetic (EWMA mean/variance update,
             z-score, warm-up, floor, streak, clipped learning at a tenth of the weight) over the same data, in lists;
  3. detector  the whole Detector.tick on a TickObservation whose dicts spread the same number
             of keys over its three tables (device SYNs, device fan-out, command connects),
             as the monitors hand it over: only keys with a non-zero count are in the dicts.
             Today's detector: bursts, seasonality (per-slot sums of every key, profiles for
             the keys that alerted), address moves -- on the shipped defaults;
  4. detector_before  the Detector as it was before issue 10 (bursts, seasonality and address
             moves absent), loaded from git (LEGACY_COMMIT) into a package of its own, on the
             same observations, so the two are compared side by side in one run.
Also timed once: a seasonal slot change with seasonality_max_keys profiles in each table.
Goal: numpy and detector <= 20 ms per tick. The ratio python/numpy is the point of numpy.

Data: per key a background rate drawn from a log-normal (most keys well under 1 a tick, a
few busy ones), Poisson counts around it; at any time ANOMALOUS_FRACTION of the keys storm
(rate x50 + 100), each storm lasting STORM_TICKS ticks. Tables are warmed up untimed first, so scoring runs on learnt baselines.
The two implementations are checked to agree (means, variances, anomalies) at the end.
Times: wall clock (median, p95) and CPU time of this thread (median), which a machine shared
with other work disturbs less.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent)]

import numpy as np  # noqa: E402

from netwatchd.alerting.alerts import AlertIds  # noqa: E402
from netwatchd.alerting.baseline import Anomaly, BaselineParams, BaselineTable  # noqa: E402
from netwatchd.config import AlertsConfig  # noqa: E402
from netwatchd.alerting.detector import Detector  # noqa: E402
from netwatchd.alerting.observation import TickObservation  # noqa: E402

RESULTS = BENCH / "results"
LEGACY_COMMIT = "1592847"  # the last commit before issue 10's detector
LEGACY_FILES = ("alerts", "baseline", "config", "detector", "observation")
GOAL_MS = 20.0
ANOMALOUS_FRACTION = 0.001
STORM_TICKS = 5  # a storm lasts this many ticks on the same keys, then others storm
WARMUP_TICKS = 10  # the params' warm-up; the bench runs 2x this many untimed ticks first
CFG = AlertsConfig(warmup_ticks=WARMUP_TICKS, cooldown_sec=600, learning_period_sec=0)
PARAMS = BaselineParams(CFG.ewma_alpha, CFG.z_threshold, CFG.min_stddev, CFG.warmup_ticks,
                        float(CFG.process_connect_floor), float(CFG.cold_connect_rate), CFG.consecutive_ticks)


# -- data ------------------------------------------------------------------------------------
def make_counts(keys: int, ticks: int, seed: int) -> np.ndarray:
    """[ticks, keys] counts: Poisson around each key's own rate, a few storms each tick."""
    rng = np.random.default_rng(seed)
    rate = rng.lognormal(mean=-1.0, sigma=1.2, size=keys)  # median ~0.37 a tick, a long busy tail
    counts = rng.poisson(rate, size=(ticks, keys)).astype(float)
    storms = max(1, int(keys * ANOMALOUS_FRACTION))
    for t in range(ticks):
        if t % STORM_TICKS == 0:
            hit = rng.choice(keys, storms, replace=False)
        counts[t, hit] = rng.poisson(rate[hit] * 50 + 100)
    return counts


def key_names(keys: int) -> Tuple[List[str], List[str], List[str]]:
    """Split `keys` over the detector's tables: 40% devices, 20% devices' fan-out, 40% commands."""
    n_dev, n_fan = keys * 2 // 5, keys // 5
    n_cmd = keys - n_dev - n_fan
    devices = ["02:%02x:%02x:%02x:%02x:%02x" % tuple((i >> s) & 0xFF for s in (32, 24, 16, 8, 0)) for i in range(n_dev)]
    fan = devices[:n_fan]
    commands = [f"cmd-{i}" for i in range(n_cmd)]
    return devices, fan, commands


def observation(t: int, row: np.ndarray, names: Tuple[List[str], List[str], List[str]]) -> TickObservation:
    devices, fan, commands = names
    a, b = len(devices), len(devices) + len(fan)

    def nonzero(keys: List[str], values: np.ndarray) -> Dict[str, int]:
        nz = np.flatnonzero(values)
        vals = values[nz].astype(int).tolist()
        return {keys[i]: v for i, v in zip(nz.tolist(), vals)}

    return TickObservation(time_usec=1_700_000_000_000_000 + t * 1_000_000,
                           device_connects=nonzero(devices, row[:a]),
                           device_new_ports=nonzero(fan, row[a:b]),
                           command_connects=nonzero(commands, row[b:]))


# -- the per-key Python loop -------------------------------------------------------------------
class PythonBaselines:
    """BaselineTable.update_dense's arithmetic, one key at a time, on Python lists."""

    def __init__(self, keys: List[str]):
        n = len(keys)
        self.keys = keys
        self.mean, self.var = [0.0] * n, [0.0] * n
        self.ticks, self.streak = [0] * n, [0] * n

    def update(self, xs: List[float], p: BaselineParams) -> List[Anomaly]:
        mean, var, ticks, streak, keys = self.mean, self.var, self.ticks, self.streak, self.keys
        alpha, thr, min_std, warmup, floor, cold, consecutive = (
            p.alpha, p.z_threshold, p.min_stddev, p.warmup_ticks, p.floor, p.cold_rate, p.consecutive)
        fired = []
        for i, x in enumerate(xs):
            m, v = mean[i], var[i]
            std = math.sqrt(v)
            if std < min_std:
                std = min_std
            z = (x - m) / std
            warm = ticks[i] >= warmup
            hot = (z >= thr if warm else x >= cold) and x >= floor
            s = streak[i] + 1 if hot else 0
            streak[i] = s
            if s >= consecutive:
                fired.append(Anomaly(keys[i], x, m, z, warm))
            learn = m + thr * std if (hot and warm) else x
            a = alpha * 0.1 if hot else alpha
            d = learn - m
            mean[i] = m + a * d
            var[i] = (1 - a) * (v + a * d * d)
            ticks[i] += 1
        return fired


# -- the detector before issue 10 --------------------------------------------------------------
def legacy_detector(cfg_kwargs: Dict):
    """A Detector from LEGACY_COMMIT (its own package, netwatchd_legacy), or None without git."""
    import importlib
    import subprocess
    import tempfile
    import types

    root = Path(tempfile.mkdtemp(prefix="nwd-bench-legacy-")) / "netwatchd_legacy"
    root.mkdir()
    try:
        for name in LEGACY_FILES:
            text = subprocess.run(["git", "-C", str(BENCH.parent), "show", f"{LEGACY_COMMIT}:netwatchd/{name}.py"],
                                  capture_output=True, text=True, check=True).stdout
            (root / f"{name}.py").write_text(text)
    except (OSError, subprocess.CalledProcessError):
        return None
    (root / "__init__.py").write_text("")
    sys.path.insert(0, str(root.parent))
    config = importlib.import_module("netwatchd_legacy.config")
    detector = importlib.import_module("netwatchd_legacy.detector")
    alerts = importlib.import_module("netwatchd_legacy.alerts")
    assert isinstance(detector, types.ModuleType)
    return detector.Detector(config.AlertsConfig(**cfg_kwargs), alerts.AlertIds(0), learning_until_usec=0)


def time_slot_change(detector: Detector) -> float:
    """ms for one slot change with every table's profiles full (seasonality_max_keys rows)."""
    total = 0.0
    for name, season in detector.seasons.items():
        table = detector.tables[name]
        for slot in range(min(len(table), season.max_keys)):
            season.adopt(table.key(slot), slot)
        later = (season.current + 1) * season.slot_sec * 1_000_000 + 1
        t0 = time.perf_counter()
        season.advance(later)
        total += (time.perf_counter() - t0) * 1e3
    return total


# -- measuring -------------------------------------------------------------------------------
def timed(fn, *args):
    w0, c0 = time.perf_counter(), time.thread_time()
    result = fn(*args)
    return result, (time.perf_counter() - w0) * 1e3, (time.thread_time() - c0) * 1e3


def pct(values: List[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def stats(wall: List[float], cpu: List[float]) -> Dict:
    return {"median_ms": round(statistics.median(wall), 3), "p95_ms": round(pct(wall, 0.95), 3),
            "cpu_median_ms": round(statistics.median(cpu), 3), "min_ms": round(min(wall), 3)}


def run(keys: int, ticks: int, seed: int) -> Dict:
    warm = 2 * WARMUP_TICKS
    t0 = time.perf_counter()
    counts = make_counts(keys, warm + ticks, seed)
    names = key_names(keys)
    flat_keys = names[0] + [f"fan:{k}" for k in names[1]] + names[2]
    table = BaselineTable(keys)
    table.indexes(flat_keys)
    python = PythonBaselines(flat_keys)
    detector = Detector(CFG, AlertIds(0), learning_until_usec=0)
    before = legacy_detector({"warmup_ticks": WARMUP_TICKS, "cooldown_sec": 600, "learning_period_sec": 0})
    rows = [counts[t] for t in range(warm + ticks)]
    lists = [r.tolist() for r in rows]
    observations = [observation(t, r, names) for t, r in enumerate(rows)]
    setup_sec = time.perf_counter() - t0

    series = {"numpy": ([], []), "python": ([], []), "detector": ([], []), "detector_before": ([], [])}
    alerts_before = 0
    alerts, mismatched_ticks, anomalies = 0, 0, 0
    for t in range(warm + ticks):
        got_np, w_np, c_np = timed(table.update_dense, rows[t], PARAMS)
        got_py, w_py, c_py = timed(python.update, lists[t], PARAMS)
        got_det, w_det, c_det = timed(detector.tick, observations[t])
        got_old, w_old, c_old = timed(before.tick, observations[t]) if before else ([], 0.0, 0.0)
        if sorted(a.key for a in got_np) != sorted(a.key for a in got_py):
            mismatched_ticks += 1
        if t >= warm:
            alerts_before += len(got_old)
            for name, w, c in (("numpy", w_np, c_np), ("python", w_py, c_py), ("detector", w_det, c_det),
                               ("detector_before", w_old, c_old)):
                series[name][0].append(w)
                series[name][1].append(c)
            anomalies += len(got_np)
            alerts += len(got_det)
    agree = (mismatched_ticks == 0 and np.allclose(table.mean[:keys], python.mean)
             and np.allclose(table.var[:keys], python.var))
    result = {name: stats(w, c) for name, (w, c) in series.items() if w and (name != "detector_before" or before)}
    slot_change_ms = round(time_slot_change(detector), 3)
    return {
        "keys": keys, "timed_ticks": ticks, "untimed_warmup_ticks": warm, "seed": seed,
        "tables": {"device_connects": len(names[0]), "device_fan_out": len(names[1]),
                   "command_connects": len(names[2])},
        "keys_in_dicts_per_tick": round(statistics.mean(
            len(o.device_connects) + len(o.device_new_ports) + len(o.command_connects) for o in observations), 1),
        "anomalous_keys_per_tick": max(1, int(keys * ANOMALOUS_FRACTION)),
        "anomalies_per_tick": round(anomalies / ticks, 1), "detector_alerts": alerts,
        "detector_before_alerts": alerts_before if before else None, "slot_change_ms": slot_change_ms,
        "implementations_agree": bool(agree), "setup_sec": round(setup_sec, 2),
        **result,
        "ratio_python_to_numpy": round(result["python"]["median_ms"] / result["numpy"]["median_ms"], 1),
        "ratio_python_to_numpy_cpu": round(result["python"]["cpu_median_ms"] / result["numpy"]["cpu_median_ms"], 1),
        "ratio_python_to_detector": round(result["python"]["median_ms"] / result["detector"]["median_ms"], 1),
    }


def report(r: Dict, host: Dict) -> str:
    L = [f"netwatchd detector benchmark  {host['time']}  {host['cpus']} CPUs, numpy {host['numpy']}, "
         f"load avg {' '.join('%.2f' % x for x in host['loadavg'])} at start",
         f"{r['keys']:,} keys ({r['tables']['device_connects']:,} device SYNs, {r['tables']['device_fan_out']:,} "
         f"device fan-out, {r['tables']['command_connects']:,} commands); {r['timed_ticks']} timed ticks after "
         f"{r['untimed_warmup_ticks']} untimed; ~{r['keys_in_dicts_per_tick']:,.0f} non-zero keys a tick, "
         f"{r['anomalous_keys_per_tick']} storming",
         "",
         f"  {'per tick':<44} {'median':>9} {'p95':>9} {'cpu med':>9}  goal <= {GOAL_MS:.0f} ms"]
    labels = {"numpy": "BaselineTable.update_dense (numpy, all keys)",
              "detector": "Detector.tick (dicts -> 3 tables -> alerts)",
              "python": "per-key Python loop, same arithmetic"}
    labels["detector_before"] = "Detector.tick before issue 10 (same data)"
    for name in ("numpy", "detector", "detector_before", "python"):
        if name not in r:
            continue
        s = r[name]
        goal = "" if name in ("python", "detector_before") else ("  PASS" if s["median_ms"] <= GOAL_MS else "  FAIL")
        L.append(f"  {labels[name]:<44} {s['median_ms']:>7.2f}ms {s['p95_ms']:>7.2f}ms {s['cpu_median_ms']:>7.2f}ms{goal}")
    L += ["",
          f"  ratio Python loop / numpy:         {r['ratio_python_to_numpy']:.1f}x  (CPU time: {r['ratio_python_to_numpy_cpu']:.1f}x)",
          f"  ratio Python loop / Detector.tick: {r['ratio_python_to_detector']:.1f}x",
          *([f"  Detector.tick now / before issue 10: {r['detector']['median_ms'] / r['detector_before']['median_ms']:.2f}x "
             f"(CPU {r['detector']['cpu_median_ms'] / r['detector_before']['cpu_median_ms']:.2f}x); "
             f"alerts now {r['detector_alerts']}, before {r['detector_before_alerts']}"] if "detector_before" in r else []),
          f"  a seasonal slot change with full profiles (3 tables): {r['slot_change_ms']:.2f} ms, once a slot",
          f"  numpy and Python loop agree (means, variances, anomalous keys every tick): "
          f"{'yes' if r['implementations_agree'] else 'NO'}; {r['anomalies_per_tick']} anomalies a tick, "
          f"{r['detector_alerts']} detector alerts in the timed ticks (cooldown {CFG.cooldown_sec} s)"]
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--ticks", type=int, default=50, help="timed ticks")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="10k keys, 10 ticks")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = p.parse_args(argv)
    if args.quick:
        args.keys, args.ticks = 10_000, 10
    host = {"kernel": platform.release(), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
            "python": platform.python_version(), "numpy": np.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    r = run(args.keys, args.ticks, args.seed)
    print(report(r, host))
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"detector_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps({"host": host, "goal_ms": GOAL_MS, **r}, indent=2) + "\n")
        print(f"\nwrote {out.relative_to(BENCH.parent)}")
    ok = r["implementations_agree"] and r["numpy"]["median_ms"] <= GOAL_MS and r["detector"]["median_ms"] <= GOAL_MS
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
