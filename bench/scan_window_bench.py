"""Slow-scan windows (netwatchd/alerting/scan_windows.py): per-tick CPU and memory at 4096
devices x 1000 pairs in the shipped 300 s window.

    .venv/bin/python bench/scan_window_bench.py            (about a minute)
    .venv/bin/python bench/scan_window_bench.py --quick    (smoke check: 256 devices)

Every device probes 1000 distinct (host, port) pairs per window, evenly: 3-4 new pairs a tick
each (13.6k probes a tick at 4096 devices), so in the steady state each tick both adds and
expires as many pairs as a window holds per second. Public hosts on 443/80, so no bar is
reached (an alert's cost is its sample gathering, once per cooldown). Run twice: with the
shipped MAX_PAIRS_TOTAL (2^20 pairs; as every device probes in every tick here, none can be
forgotten to make room and the tick's pairs beyond the total are dropped), then with the total
uncapped (all 4M pairs held). Printed: ms per tick (mean, p95) of the steady state, address
parsing of the observation's probes included; the window's arrays in MB and the process's
resident growth (the second run reuses what the allocator kept from the first).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netwatchd.alerting.alerts import AlertIds  # noqa: E402
from netwatchd.alerting.scan_windows import MAX_PAIRS_TOTAL, Bars, ScanWindows  # noqa: E402

SEC = 1_000_000
T0 = 1_700_000_000 * SEC
SHIPPED = Bars(window_sec=300, ports_per_host=15, hosts_per_port=25, cooldown_sec=600)


def probes_for(tick: int, devices: int, pairs: int, window: int):
    """Each device's pairs of this tick: pair k of device d at tick k * window // pairs."""
    out = {}
    per_tick = pairs / window
    first, last = int(np.ceil(tick * per_tick)), int(np.ceil((tick + 1) * per_tick))
    for d in range(devices):
        mac = f"02:00:00:00:{d >> 8:02x}:{d & 255:02x}"
        out[mac] = [[f"198.{18 + (n >> 16 & 1)}.{n >> 8 & 255}.{n & 255}", 443 if n & 1 else 80, "tcp"]
                    for n in ((d * 7919 + k * 104729) & 0x1FFFF for k in range(first, last))]
    return out


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(devices: int, pairs: int, window: int, measured: int, max_total: int):
    """The steady state's tick times (no tracing: it would slow the numpy-free parts most) and
    the process's resident growth over the whole run (the window's arrays, their Python
    objects, the allocator's slack)."""
    w, ids = ScanWindows(max_total=max_total), AlertIds(T0)
    base = rss_mb()
    times, alerts = [], 0
    for tick in range(window + measured):  # a window to fill, then the steady state measured
        probes = probes_for(tick, devices, pairs, window)
        start = time.perf_counter()
        alerts += len(w.tick(probes, T0 + tick * SEC, SHIPPED, ids, True))
        if tick >= window:
            times.append(time.perf_counter() - start)
        del probes
    return w, np.array(times) * 1000, rss_mb() - base, alerts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    devices = 256 if args.quick else 4096
    pairs, window, measured = 1000, 300, 20
    for name, total in (("shipped total", MAX_PAIRS_TOTAL), ("total uncapped", devices * pairs)):
        w, ms, heap, alerts = run(devices, pairs, window, measured, total)
        print(f"scan windows, {name}: {devices} devices x {pairs} pairs in a {window} s window "
              f"({w.pairs()} pairs held, {len(w.slots)} devices, {w.dropped} dropped, {alerts} alerts)")
        print(f"  per tick (steady state, {measured} ticks): mean {ms.mean():.1f} ms, "
              f"p95 {np.percentile(ms, 95):.1f} ms")
        print(f"  memory: window arrays {w.nbytes() / 2**20:.1f} MB "
              f"({w.nbytes() / max(w.pairs(), 1):.0f} bytes a pair), resident growth {heap:.1f} MB")
        del w
    return 0


if __name__ == "__main__":
    sys.exit(main())
