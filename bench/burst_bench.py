"""How the burst defaults were chosen (issue 10): what one tick scores for background traffic
and for the three sub-second cases, on the shipped baseline settings.

    .venv/bin/python bench/burst_bench.py          (no root; ~10 s)

Background shapes (per tick; the tick length itself jitters +-40%, as on a loaded machine):
  steady   Poisson around 30 connects (above device_connect_floor 20)
  jittered Poisson around a new uniform(0, 60) level every tick
  ramping  from 5 to 40 over 200 ticks after warm-up
  command  Poisson around 4 connect() calls
For each: the highest score (z against its own rolling baseline) and count any tick reached
after warm-up, over TRIALS runs. Then the cases of issue 10, each on a warmed-up key, split
over two ticks at the worst place (half and half): nmap's 300 first-seen ports, a device's
2000 SYNs, a command's 3000 connect() calls -- their score and count in the bigger half.
A burst threshold must sit well above every background maximum and below every case, for
both the score (burst_score) and the count (burst_* per kind).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

import numpy as np  # noqa: E402

from netwatchd.alerting.baseline import BaselineParams, BaselineTable  # noqa: E402
from netwatchd.config import AlertsConfig  # noqa: E402

TRIALS = 30
WARMUP = 100  # the scenario suite's compressed warm-up
RUN = 200


def background_maxima(cfg: AlertsConfig):
    rng = np.random.default_rng(5)
    worst = {}
    for _ in range(TRIALS):
        t = BaselineTable()
        p = BaselineParams(cfg.ewma_alpha, cfg.z_threshold, cfg.min_stddev, WARMUP, 20.0, float(cfg.cold_connect_rate),
                           cfg.consecutive_ticks)
        for tick in range(WARMUP + RUN):
            f = rng.uniform(0.6, 1.4)
            obs = {"steady": rng.poisson(30 * f), "jittered": rng.poisson(rng.uniform(0, 60) * f),
                   "ramping": rng.poisson((5 + 35 * max(0, tick - WARMUP) / RUN) * f), "command": rng.poisson(4 * f)}
            x = t.dense(obs)
            n = len(x)
            z = (x - t.mean[:n]) / np.maximum(np.sqrt(t.var[:n]), cfg.min_stddev)
            if tick >= WARMUP:
                for k, v in obs.items():
                    i = t.slot(k)
                    s, c = worst.get(k, (0.0, 0))
                    worst[k] = (max(s, float(z[i])), max(c, int(v)))
            t.update_dense(x, p)
    return worst


def case_scores(cfg: AlertsConfig):
    rng = np.random.default_rng(6)
    out = {}
    for name, usual, total in (("nmap 300 ports (fan_out)", 0.05, 300), ("device 2000 SYNs", 3, 2000),
                               ("command 3000 connects", 6, 3000)):
        t = BaselineTable()
        p = BaselineParams(cfg.ewma_alpha, cfg.z_threshold, cfg.min_stddev, WARMUP, 1.0, 1e9, 2)
        for _ in range(WARMUP + 50):
            t.update({"k": float(rng.poisson(usual))}, p)
        mean, std, _ = t.stats("k")
        half = total / 2
        out[name] = ((half - mean) / max(std, cfg.min_stddev), half)
    return out


def main() -> int:
    cfg = AlertsConfig()
    print(f"shipped: z_threshold {cfg.z_threshold}, burst_score {cfg.burst_score}, burst counts fan_out "
          f"{cfg.burst_fan_out}, device {cfg.burst_device_connects}, command {cfg.burst_process_connects}\n")
    print(f"  {'background (after warm-up)':<28} {'max score':>10} {'max count':>10}")
    for k, (s, c) in background_maxima(cfg).items():
        print(f"  {k:<28} {s:>10.1f} {c:>10d}")
    print(f"\n  {'case, worst split (half)':<28} {'score':>10} {'count':>10}")
    ok = True
    for k, (s, c) in case_scores(cfg).items():
        print(f"  {k:<28} {s:>10.1f} {c:>10.0f}")
        ok &= s >= cfg.burst_score
    print("\nevery case scores above burst_score even when split in two: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
