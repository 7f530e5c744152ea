"""Bursts (pure): which single tick is far enough above normal to alert at once.

A sustained, moderate deviation needs `consecutive_ticks` anomalous ticks in a row. But a scan
or a storm can be over in 20 ms, inside one tick, and its next tick is quiet again: with
confirmation it would never alert. A burst is a tick that is hot (above its floor and
z_threshold, or the cold rate while warming up) AND both
  - at least `burst_score` standard deviations above the key's own normal (30 by default, five
    times z_threshold: jitter and slow ramps never come near it), and
  - at least the kind's burst count (burst_fan_out, burst_device_connects,
    burst_process_connects): "far above normal" for a quiet key is also "many", so a quiet
    device reaching 25 new ports still needs confirmation, while nmap's few hundred does not.
A key still warming up has no normal yet: its burst is the count alone (above the cold rate).
The arithmetic is in BaselineTable.update_dense, vectorized with the rest of the scoring.

Why these defaults (bench/burst_bench.py measures them): the three cases of issue 10 are
~300 first-seen ports (nmap -sT of a few hundred ports in ~20 ms), a few thousand SYNs from one
device in 0.1 s and several thousand connect() calls of one command in a fraction of a second.
A burst straddling a tick boundary puts at least half of itself in one tick, so each case is
caught within 2 ticks when its total is at least twice its burst count: 300 >= 2 x 100,
2000 >= 2 x 500, 3000 >= 2 x 1000 -- and smaller halves are still hot for 2 ticks in a row.
"""
from __future__ import annotations

from typing import Dict

from netwatchd.config import AlertsConfig

# detector table -> the burst count setting that applies to it
BURST_COUNT_KEYS: Dict[str, str] = {
    "device_fan_out": "burst_fan_out",
    "device_connects": "burst_device_connects",
    "command_connects": "burst_process_connects",
}


def burst_count(cfg: AlertsConfig, table: str) -> float:
    return float(getattr(cfg, BURST_COUNT_KEYS[table]))
