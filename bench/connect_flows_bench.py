"""Daemon RSS and CPU with many distinct flows (issue 12): RSS after 10k connects vs after 1M
connects spread over 100k distinct (process, destination) flows, and daemon CPU per 100k.

    .venv/bin/python bench/connect_flows_bench.py            (as root; about 1-2 minutes)
    .venv/bin/python bench/connect_flows_bench.py --quick    (100k connects, 10k flows)

Flows: W worker processes each cycle through their own F/W addresses in 127.77.0.0/16 and
127.78.0.0/16 at one port this benchmark holds bound on 127.0.0.1 (so no listener of anyone
else can have that port on a wildcard address): every connect is refused at once by the
loopback, and each (worker, address) is a distinct flow with its own record, latency sample
and beacon start. The daemon runs the shipped config. Traffic: 127.0.0.0/8 only.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path
from typing import Dict, List

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from bench_main import bench_daemon, run_benchmark  # noqa: E402
from connect_bench import cpu_sec, rss_kib, settle  # noqa: E402
from tests.support.connect_load import refused_connects  # noqa: E402
from tests.support.daemon import PrivateSystemBus, unvariant  # noqa: E402

GOAL_RSS_GROWTH_MB = 10.0

def run(args) -> Dict:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # our port: nobody can listen on it on a wildcard address
    port = holder.getsockname()[1]
    r: Dict = {"flows": args.flows, "connects": args.connects, "workers": args.workers}
    try:
        overrides = {"beacons": {"enabled": False}} if args.beacons_off else {}
        r["beacons"] = not args.beacons_off
        with PrivateSystemBus() as bus, bench_daemon(bus, overrides) as daemon:
            warm = refused_connects(port, args.workers, args.workers, args.warm)  # one flow each
            settle(daemon)
            r["rss_kib_warm"] = rss_kib(daemon.pid)
            cpu0, t0 = cpu_sec(daemon.pid), time.monotonic()
            main = refused_connects(port, args.workers, args.flows, args.connects)
            settle(daemon)
            r["wall_sec"] = time.monotonic() - t0
            r["daemon_cpu_sec"] = cpu_sec(daemon.pid) - cpu0
            time.sleep(2 * 1.0)  # two ticks: the tick's work on the new flows is in the figure
            settle(daemon)
            r["rss_kib_end"] = rss_kib(daemon.pid)
            exact = []
            for pid, refused in {**warm, **main}.items():
                (s,) = daemon.call("Summary", "usu", pid, "", 3600)
                s = unvariant(s)
                exact.append(s["refused"] == refused == s["total_attempts"])
            r["summary_exact"] = f"{sum(exact)}/{len(exact)}"
            r["events_lost"] = daemon.get_property("EventsLost")
            r["warm_connects"] = sum(warm.values())
            r["main_connects"] = sum(main.values())
    finally:
        holder.close()
    return r


def report(r: Dict) -> str:
    growth = (r["rss_kib_end"] - r["rss_kib_warm"]) / 1024
    L = [f"netwatchd connect flows benchmark: {r['workers']} workers, {r['flows']:,} distinct flows, refused "
         f"loopback connects, beacons {'on (shipped)' if r['beacons'] else 'off'}",
         f"  RSS after {r['warm_connects']:,} connects {r['rss_kib_warm'] / 1024:.1f} MB, after "
         f"{r['warm_connects'] + r['main_connects']:,} {r['rss_kib_end'] / 1024:.1f} MB: +{growth:.1f} MB "
         f"({r['rss_kib_end'] / r['rss_kib_warm']:.2f}x; goal <= +{GOAL_RSS_GROWTH_MB:.0f} MB: "
         f"{'PASS' if growth <= GOAL_RSS_GROWTH_MB else 'FAIL'})",
         f"  daemon CPU per 100k connects: {r['daemon_cpu_sec'] / r['main_connects'] * 1e5:.2f} s "
         f"({r['main_connects'] / r['wall_sec']:,.0f} connects/s)",
         f"  Summary exact per worker: {r['summary_exact']}; EventsLost {r['events_lost']}"]
    return "\n".join(L)


def parse_args(argv: List[str]):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--beacons-off", action="store_true", help="beacons.enabled: false, to see the tracker's share")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--warm", type=int, default=10_000)
    p.add_argument("--connects", type=int, default=1_000_000)
    p.add_argument("--flows", type=int, default=100_000)
    p.add_argument("--results-dir", default=str(BENCH / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.connects, args.flows = 100_000, 10_000
    return args


def main(argv=None) -> int:
    return run_benchmark("connect_flows_bench", "BPF, bpf_stats, cgroup hooks", parse_args(argv or sys.argv[1:]),
                         run, report)


if __name__ == "__main__":
    sys.exit(main())
