"""Issue 24's figures, side by side in one run: what a busy host pays for netwatchd.

    .venv/bin/python bench/busy_host_bench.py            (as root; about 1-2 minutes)
    .venv/bin/python bench/busy_host_bench.py --quick    (2 x 30k connects over 20k flows)

Load (issue 24's): 2 workers x 150k refused connects over 2 x 50k distinct flows at full speed
(tests/support/connect_load.py: 127.77.0.0/16 at a port held bound here, refused by the
loopback). Phases, one run:
  1. the load without netwatchd;
  2. netwatchd on the shipped config; a warm-up (one flow per worker); RSS;
  3. BPF cost: 2 x 20k connects with kernel.bpf_stats_enabled and the floor probe loaded
     (bench/reference_probes.bpf.c: sys_enter_connect bumping one per-CPU counter): ns per
     connect of every netwatchd program (their run time over the connects) against the floor's;
  4. the load with netwatchd: its rate, the daemon's CPU per connect, records lost (EventsLost),
     Summary exact per worker; RSS two ticks later (total, and anonymous: the mapped ring's pages
     count in the total as they are touched, though they are the kernel's, not the daemon's heap);
  5. the load without netwatchd again.
The rate ratio is phase 4 over the mean of phases 1 and 5. Traffic: 127.0.0.0/8 only.
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

import bpf_stats  # noqa: E402
from bench_main import bench_daemon, run_benchmark  # noqa: E402
from connect_bench import cpu_sec, rss_kib, settle  # noqa: E402
from reference_probes import ReferenceProbes  # noqa: E402
from tests.support.connect_load import refused_connects  # noqa: E402
from tests.support.daemon import PrivateSystemBus, unvariant  # noqa: E402

GOALS = {"rate_ratio": 0.9, "bpf_x_floor": 10.0, "cpu_usec_per_connect": 1.5, "lost": 0, "rss_growth_mb": 10.0}


def rss_anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def timed_load(port: int, workers: int, flows: int, connects: int) -> Dict:
    t0 = time.monotonic()
    tally = refused_connects(port, workers, flows, connects)
    wall = time.monotonic() - t0
    return {"tally": tally, "wall_sec": wall, "rate_per_sec": sum(tally.values()) / wall}


def bpf_phase(port: int, daemon, args) -> Dict:
    ours = bpf_stats.netwatchd_programs(daemon.pid)
    with bpf_stats.StatsEnabled(), ReferenceProbes() as probes:
        probes.wait_loaded()
        floor = bpf_stats.prog_of_fd(probes.pid, probes.fds["floor"])
        progs = list(ours.values()) + [floor]
        settle(daemon)
        before = bpf_stats.read_counters(progs)
        load = timed_load(port, args.workers, args.workers, args.bpf_connects)
        after = bpf_stats.read_counters(progs)
    calls = sum(load["tally"].values())
    per = {name: bpf_stats.per_run(before, after, p) for name, p in ours.items()}
    floor_run = bpf_stats.per_run(before, after, floor)
    return {"connects": calls, "floor_ns": floor_run["ns_per_run"],
            "programs": {name: {"runs_per_connect": p["runs"] / calls, "ns_per_run": p["ns_per_run"],
                                "ns_per_connect": p["run_time_ns"] / calls} for name, p in per.items() if p["runs"]}}


def run(args) -> Dict:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # ours: nobody can listen on it on a wildcard address
    port = holder.getsockname()[1]
    r: Dict = {"workers": args.workers, "flows": args.flows, "connects": args.connects}
    try:
        r["without_before"] = timed_load(port, args.workers, args.flows, args.connects)
        with PrivateSystemBus() as bus, bench_daemon(bus, {}) as daemon:
            refused_connects(port, args.workers, args.workers, args.warm)
            settle(daemon)
            time.sleep(2.0)  # two ticks
            r["rss_kib_warm"], r["rss_anon_kib_warm"] = rss_kib(daemon.pid), rss_anon_kib(daemon.pid)
            r["bpf"] = bpf_phase(port, daemon, args)
            settle(daemon)
            lost0, cpu0 = daemon.get_property("EventsLost"), cpu_sec(daemon.pid)
            r["with"] = timed_load(port, args.workers, args.flows, args.connects)
            settle(daemon)
            r["daemon_cpu_sec"] = cpu_sec(daemon.pid) - cpu0
            time.sleep(2.0)  # two ticks: the tick's work on the new flows is in the figures
            settle(daemon)
            r["daemon_cpu_sec_with_ticks"] = cpu_sec(daemon.pid) - cpu0
            r["rss_kib_end"], r["rss_anon_kib_end"] = rss_kib(daemon.pid), rss_anon_kib(daemon.pid)
            r["lost"] = daemon.get_property("EventsLost") - lost0
            exact = []
            for pid, refused in r["with"]["tally"].items():
                (s,) = daemon.call("Summary", "usu", pid, "", 3600)
                s = unvariant(s)
                exact.append(s["refused"] == refused == s["total_attempts"])
            r["summary_exact"] = f"{sum(exact)}/{len(exact)}"
        r["without_after"] = timed_load(port, args.workers, args.flows, args.connects)
    finally:
        holder.close()
    return r


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(r: Dict) -> str:
    base = (r["without_before"]["rate_per_sec"] + r["without_after"]["rate_per_sec"]) / 2
    ratio = r["with"]["rate_per_sec"] / base
    connects = sum(r["with"]["tally"].values())
    b = r["bpf"]
    total_ns = sum(p["ns_per_connect"] for p in b["programs"].values())
    x_floor = total_ns / b["floor_ns"]
    cpu_us = r["daemon_cpu_sec_with_ticks"] / connects * 1e6
    growth = (r["rss_kib_end"] - r["rss_kib_warm"]) / 1024
    anon = (r["rss_anon_kib_end"] - r["rss_anon_kib_warm"]) / 1024
    L = [f"netwatchd on a busy host: {r['workers']} workers x {r['connects'] // r['workers']:,} refused loopback "
         f"connects over {r['flows']:,} flows, shipped config; side by side in one run",
         f"  connect rate: {r['with']['rate_per_sec']:,.0f}/s with netwatchd vs {base:,.0f}/s without (before "
         f"{r['without_before']['rate_per_sec']:,.0f}, after {r['without_after']['rate_per_sec']:,.0f}): "
         f"{ratio:.2f}x (goal >= {GOALS['rate_ratio']}x: {verdict(ratio >= GOALS['rate_ratio'])})",
         f"  BPF per connect ({b['connects']:,} connects, stats on): all programs {total_ns:.0f} ns = "
         f"{x_floor:.1f}x the floor's {b['floor_ns']:.0f} ns (goal <= {GOALS['bpf_x_floor']:.0f}x: "
         f"{verdict(x_floor <= GOALS['bpf_x_floor'])})"]
    for name, p in sorted(b["programs"].items(), key=lambda kv: -kv[1]["ns_per_connect"]):
        L.append(f"      {name:<20s} {p['ns_per_connect']:6.0f} ns per connect ({p['runs_per_connect']:.2f} runs x "
                 f"{p['ns_per_run'] or 0:.0f} ns)")
    L += [f"  daemon CPU: {cpu_us:.2f} us per connect, ticks included ({r['daemon_cpu_sec'] / connects * 1e6:.2f} "
          f"during the load) (goal <= {GOALS['cpu_usec_per_connect']}: {verdict(cpu_us <= GOALS['cpu_usec_per_connect'])})",
          f"  records lost: {r['lost']} of {connects:,} (goal 0: {verdict(r['lost'] == 0)}); Summary exact per "
          f"worker: {r['summary_exact']}",
          f"  RSS: {r['rss_kib_warm'] / 1024:.1f} MB warm -> {r['rss_kib_end'] / 1024:.1f} MB: +{growth:.1f} MB "
          f"(anonymous +{anon:.1f} MB) (goal <= +{GOALS['rss_growth_mb']:.0f} MB: "
          f"{verdict(growth <= GOALS['rss_growth_mb'])})"]
    return "\n".join(L)


def parse_args(argv: List[str]):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warm", type=int, default=5_000)
    p.add_argument("--connects", type=int, default=300_000)
    p.add_argument("--flows", type=int, default=100_000)
    p.add_argument("--bpf-connects", type=int, default=40_000)
    p.add_argument("--results-dir", default=str(BENCH / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.connects, args.flows, args.bpf_connects = 60_000, 20_000, 10_000
    return args


def main(argv=None) -> int:
    return run_benchmark("busy_host_bench", "BPF, bpf_stats, cgroup hooks", parse_args(argv or sys.argv[1:]),
                         run, report)


if __name__ == "__main__":
    sys.exit(main())
