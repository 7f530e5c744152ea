"""The connect-path benchmarks of issue 2, each a ratio of figures measured side by side in one run.

    .venv/bin/python bench/connect_bench.py            (make bench; as root; about 1-2 minutes)
    .venv/bin/python bench/connect_bench.py --quick    (smoke check: small numbers, ~15 s)

  1. BPF ns per IPv4 TCP connect (bpf_stats) of our connect-path programs, record_events true and
     false, against a floor probe and a reference tool loaded in the same run.
  2. Summary exact per worker pid at the machine's full loopback connect rate; EventsLost.
  3. Daemon RSS after 10k connects vs after 1M.
  4. Daemon CPU seconds per 100k connects.
  5. Summary latency with 1M connects recorded vs a Peer.Ping round trip to the same daemon.
  6. exec -> READY=1 and RSS at READY, against an interpreter importing the same libraries.

Phases, one run: baseline load (no netwatchd) -> daemon A (record_events: true) ready -> warm-up
-> daemon B (record_events: false, own bus) + floor/reference probes, BPF-cost load -> B and the
probes stopped -> main load on A up to --connects -> exactness, RSS, CPU -> latency -> A stopped,
baseline load again.
Everything started here is stopped here by pid, on error and on Ctrl-C too. Traffic: 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

import bpf_stats  # noqa: E402
from bench_main import bench_daemon, run_benchmark  # noqa: E402
from loadgen import LoopbackLoad, PhaseResult, add_counts  # noqa: E402
from reference_probes import ReferenceProbes  # noqa: E402
from tests.support.daemon import BUS_NAME, INTERFACE, OBJECT_PATH, DaemonProcess, PrivateSystemBus, unvariant  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS = BENCH / "results"
GOAL_BPF_X_FLOOR = 4.0
GOAL_RSS_GROWTH_MB = 10.0
GOAL_SUMMARY_X_PING = 3.0
SUMMARY_WINDOW_SEC = 3600
# Programs of ours that run once per IPv4 TCP connect() call; the ones attached are summed.
IPV4_CONNECT_PATH = ("sys_enter_connect", "nw_connect4", "sys_exit_connect")
# TCP's sock_ops callbacks for every TCP socket of the host (both ends of a loopback connection:
# timeouts, windows, the connect, the establishments, and the state changes of each connecting
# socket); its cost per connect is its total run time over the connects.
END_HOOK = "nw_sockops"
# Runs on every RST received (the load's SO_LINGER 0 close sends one per connect).
RESET = "tcp_receive_reset"
IMPORT_FLOOR = ("import bcc, yaml, dbus_fast.aio, netwatchd.daemon, netwatchd.api.dbus, "
                "netwatchd.kernel.connect_probe\nprint([l.split()[1] for l in open('/proc/self/status') "
                "if l.startswith('VmRSS:')][0], flush=True)")


# -- readings of one process ------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_sec(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def settle(daemon: DaemonProcess) -> None:
    """Let the daemon catch up: ListConnections drains the ring buffer before it answers."""
    daemon.call("ListConnections", "uu", 0, 1)


def pct(values: List[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


# -- the figures ------------------------------------------------------------------------------
def check_exact(daemon: DaemonProcess, expected: Dict[int, Dict[str, int]]) -> Dict:
    """Summary by pid against each worker's own count: every field must match exactly."""
    rows = []
    for pid, want in expected.items():
        got = unvariant(daemon.call("Summary", "usu", pid, "", SUMMARY_WINDOW_SEC)[0])
        row = {"pid": pid, "worker_calls": want["calls"], "worker_ok": want["ok"], "worker_failed": want["failed"],
               "total_attempts": got["total_attempts"], "succeeded": got["succeeded"], "failed": got["failed"],
               "in_progress": got["in_progress"]}
        row["exact"] = (got["total_attempts"] == want["calls"] and got["succeeded"] == want["ok"]
                        and got["failed"] == want["failed"] and got["in_progress"] == 0)
        rows.append(row)
    return {"workers": rows, "all_exact": all(r["exact"] for r in rows),
            "events_lost": daemon.get_property("EventsLost")}


def startup_floor() -> Dict:
    """The same interpreter importing the same libraries, doing nothing else."""
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", IMPORT_FLOOR], cwd=REPO, stdout=subprocess.PIPE, text=True)
    rss = int(p.stdout.readline())
    elapsed = time.monotonic() - t0
    p.stdout.close()
    p.wait()
    return {"sec": elapsed, "rss_kib": rss}


def start_daemon(bus: PrivateSystemBus, config: Dict, stack: contextlib.ExitStack) -> DaemonProcess:
    d = bench_daemon(bus, config)
    stack.callback(d.cleanup)
    d.start()
    return d


async def bus_latency(address: str, pid: int, n: int, expected_total: int, warmup: int = 20) -> Dict:
    """Peer.Ping and Summary to the daemon, alternating (ABBA order), one client, one connection."""
    from dbus_fast import Message, MessageType
    from dbus_fast.aio import MessageBus

    def ping():
        return Message(destination=BUS_NAME, path=OBJECT_PATH, interface="org.freedesktop.DBus.Peer", member="Ping")

    def summary():
        return Message(destination=BUS_NAME, path=OBJECT_PATH, interface=INTERFACE, member="Summary",
                       signature="usu", body=[pid, "", SUMMARY_WINDOW_SEC])

    bus = await MessageBus(bus_address=address).connect()
    times: Dict[str, List[float]] = {"ping": [], "summary": []}
    last = None
    try:
        for i in range(warmup + n):
            order = [("ping", ping), ("summary", summary)]
            for name, make in order if i % 2 == 0 else order[::-1]:
                msg = make()
                t0 = time.perf_counter_ns()
                reply = await bus.call(msg)
                dt = time.perf_counter_ns() - t0
                if reply.message_type == MessageType.ERROR:
                    raise RuntimeError(f"{name}: {reply.error_name}: {reply.body}")
                if i >= warmup:
                    times[name].append(dt / 1000.0)
                if name == "summary":
                    last = reply.body[0]["total_attempts"].value
    finally:
        bus.disconnect()
    out = {name: {"n": len(v), "median_us": statistics.median(v), "p95_us": pct(v, 95), "min_us": min(v)}
           for name, v in times.items()}
    out["summary_answer_matches"] = last == expected_total
    return out


def bpf_phase(load: LoopbackLoad, n: int, daemons: Dict[str, DaemonProcess], probes: ReferenceProbes) -> Dict:
    """All programs loaded together; per-program ns/run from the change in the kernel's counters."""
    ours = {label: bpf_stats.netwatchd_programs(d.pid) for label, d in daemons.items()}
    yard = {k: bpf_stats.prog_of_fd(probes.pid, fd) for k, fd in probes.fds.items()}
    all_progs = [p for progs in ours.values() for p in progs.values()] + list(yard.values())
    for d in daemons.values():
        settle(d)
    cpu0 = {label: cpu_sec(d.pid) for label, d in daemons.items()}
    before = bpf_stats.read_counters(all_progs)
    phase = load.run("bpf", n)
    after = bpf_stats.read_counters(all_progs)
    for d in daemons.values():
        settle(d)
    cpu1 = {label: cpu_sec(d.pid) for label, d in daemons.items()}
    out: Dict = {"phase": phase, "floor": bpf_stats.per_run(before, after, yard["floor"]),
                 "reference": bpf_stats.per_run(before, after, yard["reference"]), "ours": {}}
    for label, progs in ours.items():
        per_prog = {name: bpf_stats.per_run(before, after, p) for name, p in progs.items()}
        path = [name for name in IPV4_CONNECT_PATH if name in per_prog]
        calls = max(1, phase.calls)
        callbacks = per_prog.get(END_HOOK, {"runs": 0, "run_time_ns": 0, "ns_per_run": None})
        connect_path_ns = sum(per_prog[name]["ns_per_run"] or 0.0 for name in path)
        # the RST mark is two programs (connect.bpf.c): their runs are per RST, their time adds up
        marks = [per_prog[name] for name in (RESET, RESET + "#2") if name in per_prog]
        reset = {"runs": max((m["runs"] for m in marks), default=0),
                 "run_time_ns": sum(m["run_time_ns"] for m in marks)}
        out["ours"][label] = {
            "programs": per_prog,
            "connect_path": path,
            "ns_per_connect": connect_path_ns,
            "callbacks_per_connect": callbacks["runs"] / calls,
            "ns_per_callback": callbacks["ns_per_run"],
            "callback_ns_per_connect": callbacks["run_time_ns"] / calls,
            "reset_ns_per_connect": reset["run_time_ns"] / calls,
            "resets_per_connect": reset["runs"] / calls,
            "all_ns_per_connect": connect_path_ns + (callbacks["run_time_ns"] + reset["run_time_ns"]) / calls,
            "daemon_cpu_sec": cpu1[label] - cpu0[label],
        }
    return out


@contextlib.contextmanager
def shielded_cleanup():
    """An ExitStack whose unwinding a second Ctrl-C (or SIGTERM) cannot cut short."""
    stack = contextlib.ExitStack()
    try:
        yield stack
    finally:
        saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            stack.close()
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)


# -- the run ----------------------------------------------------------------------------------
def run(args) -> Dict:
    sizes = {"baseline": args.baseline_connects, "warm": args.warm, "bpf": args.bpf_connects,
             "main": args.connects - args.warm - args.bpf_connects}
    if sizes["main"] <= 0:
        raise SystemExit("--connects must exceed --warm + --bpf-connects")
    r: Dict = {"sizes": sizes, "host": host_info(), "workers": args.workers, "acceptors": args.acceptors}
    with shielded_cleanup() as stack:
        load = stack.enter_context(LoopbackLoad(args.workers, args.acceptors))
        progress("baseline load, no netwatchd")
        baseline = load.run("baseline", sizes["baseline"])
        r["startup_floor"] = startup_floor()

        progress("daemon A (record_events: true)")
        bus_a = stack.enter_context(PrivateSystemBus())
        daemon_a = start_daemon(bus_a, {"connections": {"record_events": True}}, stack)
        r["startup"] = {"A": {"sec": daemon_a.ready_time - daemon_a.exec_time, "rss_kib": rss_kib(daemon_a.pid)}}
        a_phases: List[PhaseResult] = []

        progress(f"warm-up: {sizes['warm']} connects")
        a_phases.append(load.run("warm", sizes["warm"]))
        settle(daemon_a)
        lost_a = {"warm": daemon_a.get_property("EventsLost")}
        r["rss_kib_after_warm"] = rss_kib(daemon_a.pid)

        progress("daemon B (record_events: false), floor and reference probes; stats on")
        with shielded_cleanup() as bpf_stack:
            bpf_stack.enter_context(bpf_stats.StatsEnabled())
            probes = bpf_stack.enter_context(ReferenceProbes())
            bus_b = bpf_stack.enter_context(PrivateSystemBus())
            daemon_b = start_daemon(bus_b, {"connections": {"record_events": False}}, bpf_stack)
            r["startup"]["B"] = {"sec": daemon_b.ready_time - daemon_b.exec_time, "rss_kib": rss_kib(daemon_b.pid)}
            probes.wait_loaded()
            progress(f"BPF cost: {sizes['bpf']} connects, all programs loaded")
            bpf = bpf_phase(load, sizes["bpf"], {"A": daemon_a, "B": daemon_b}, probes)
            a_phases.append(bpf["phase"])
            lost_a["bpf"] = daemon_a.get_property("EventsLost")
            r["exact_B"] = check_exact(daemon_b, add_counts([bpf["phase"]]))
        r["reference_records_consumed"] = probes.consumed
        bpf["phase"] = bpf["phase"].as_dict()
        r["bpf"] = bpf

        progress(f"main load: {sizes['main']} connects on daemon A alone")
        settle(daemon_a)
        cpu0 = cpu_sec(daemon_a.pid)
        load_cpu0 = sum(cpu_sec(p) for p in load.pids())
        main_phase = load.run("main", sizes["main"])
        settle(daemon_a)
        r["daemon_cpu_sec_main"] = cpu_sec(daemon_a.pid) - cpu0
        r["load_cpu_sec_main"] = sum(cpu_sec(p) for p in load.pids()) - load_cpu0
        r["rss_kib_after_all"] = rss_kib(daemon_a.pid)
        a_phases.append(main_phase)
        lost_a["main"] = daemon_a.get_property("EventsLost")
        r["events_lost_A_after"] = lost_a
        expected = add_counts(a_phases)
        r["exact_A"] = check_exact(daemon_a, expected)
        r["connects_A"] = sum(p.calls for p in a_phases)

        progress(f"latency: {args.latency_calls} x Summary and Peer.Ping, alternating")
        pid0 = load.worker_pids[0]
        r["latency"] = asyncio.run(bus_latency(bus_a.address, pid0, args.latency_calls, expected[pid0]["calls"]))
        r["rss_kib_end"] = rss_kib(daemon_a.pid)
        daemon_a.cleanup()
        progress("baseline load again, netwatchd stopped")
        baseline_after = load.run("baseline_after", sizes["baseline"])
    r["phases"] = {"baseline": baseline.as_dict(), "main": main_phase.as_dict(),
                   "baseline_after": baseline_after.as_dict()}
    return r


def host_info() -> Dict:
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def progress(what: str) -> None:
    print(f"  .. {what}", file=sys.stderr, flush=True)


# -- the report -------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(r: Dict) -> str:
    L: List[str] = []
    h, s = r["host"], r["sizes"]
    L.append(f"netwatchd connect benchmark  {h['time']}  kernel {h['kernel']}, {h['cpus']} CPUs, "
             f"load avg {' '.join('%.2f' % x for x in h['loadavg'])} at start")
    L.append(f"load: {r['workers']} workers in a TCP connect/close loop (SO_LINGER 0) to 127.0.0.1, "
             f"{r['acceptors']} acceptors; all ratios taken side by side in this run")

    b = r["bpf"]
    floor, ref = b["floor"]["ns_per_run"], b["reference"]["ns_per_run"]
    L.append("")
    L.append(f"1. BPF ns per IPv4 TCP connect ({b['phase']['calls']:,} connects, everything below loaded at once)")
    L.append(f"   floor: sys_enter_connect, per-CPU counter only        {floor:8.0f} ns   1.00x")
    for label, desc in (("A", "record_events: true "), ("B", "record_events: false")):
        o = b["ours"][label]
        parts = " + ".join(f"{n} {o['programs'][n]['ns_per_run']:.0f}" for n in o["connect_path"])
        x = o["ns_per_connect"] / floor
        L.append(f"   netwatchd {desc}: {parts:<32s} = {o['ns_per_connect']:6.0f} ns "
                 f"{x:6.2f}x floor  (connect() programs; goal <= {GOAL_BPF_X_FLOOR:.0f}x: "
                 f"{verdict(x <= GOAL_BPF_X_FLOOR)})")
        if o.get("ns_per_callback"):
            xa = o["all_ns_per_connect"] / floor
            L.append(f"      + nw_sockops {o['ns_per_callback']:.0f} ns per TCP callback x "
                     f"{o['callbacks_per_connect']:.2f} per connect = {o['callback_ns_per_connect']:.0f} ns; "
                     f"tcp_receive_reset {o.get('reset_ns_per_connect', 0):.0f} ns per connect "
                     f"({o.get('resets_per_connect', 0):.2f} RSTs); "
                     f"all programs {o['all_ns_per_connect']:.0f} ns = {xa:.2f}x floor "
                     f"(goal <= {GOAL_BPF_X_FLOOR:.0f}x: {verdict(xa <= GOAL_BPF_X_FLOOR)}); "
                     f"per callback {o['ns_per_callback'] / floor:.2f}x floor")
    L.append(f"   reference: ring record per connect, default wakeup   {ref:8.0f} ns {ref / floor:6.1f}x floor "
             f"(netwatchd A = {b['ours']['A']['ns_per_connect'] / ref:.3f}x reference; "
             f"consumer read {r['reference_records_consumed']:,} records)")

    main, base, base2 = r["phases"]["main"], r["phases"]["baseline"], r["phases"]["baseline_after"]
    base_rate = (base["rate_per_sec"] + base2["rate_per_sec"]) / 2
    ea, eb = r["exact_A"], r["exact_B"]
    L.append("")
    L.append(f"2. Counts exact at full connect rate")
    L.append(f"   rate: {main['rate_per_sec']:,.0f} connects/s with netwatchd A vs {base_rate:,.0f}/s with none "
             f"(mean of before {base['rate_per_sec']:,.0f} and after {base2['rate_per_sec']:,.0f}): "
             f"{main['rate_per_sec'] / base_rate:.2f}x")
    L.append(f"   A: {r['connects_A']:,} connects ({main['calls']:,} in the full-rate phase), Summary by pid exact for "
             f"{sum(w['exact'] for w in ea['workers'])}/{len(ea['workers'])} workers: {verdict(ea['all_exact'])}; "
             f"EventsLost {ea['events_lost']:,} (after warm-up / BPF phase / main: "
             f"{' / '.join(f'{v:,}' for v in r['events_lost_A_after'].values())})")
    for w in ea["workers"]:
        L.append(f"      pid {w['pid']}: worker {w['worker_calls']:,} calls ({w['worker_ok']:,} ok, "
                 f"{w['worker_failed']:,} failed) / Summary {w['total_attempts']:,} "
                 f"({w['succeeded']:,} ok, {w['failed']:,} failed, {w['in_progress']} in progress)"
                 f"{'' if w['exact'] else '  <-- MISMATCH'}")
    L.append(f"   B: {b['phase']['calls']:,} connects, Summary by pid exact for "
             f"{sum(w['exact'] for w in eb['workers'])}/{len(eb['workers'])} workers: {verdict(eb['all_exact'])}; "
             f"EventsLost {eb['events_lost']:,}")

    grow_mb = (r["rss_kib_after_all"] - r["rss_kib_after_warm"]) / 1024
    L.append("")
    L.append(f"3. Daemon RSS after {s['warm']:,} connects {r['rss_kib_after_warm'] / 1024:.1f} MB, after "
             f"{r['connects_A']:,} {r['rss_kib_after_all'] / 1024:.1f} MB: +{grow_mb:.1f} MB "
             f"({r['rss_kib_after_all'] / r['rss_kib_after_warm']:.2f}x; goal <= +{GOAL_RSS_GROWTH_MB:.0f} MB: "
             f"{verdict(grow_mb <= GOAL_RSS_GROWTH_MB)})")

    per100k = r["daemon_cpu_sec_main"] / main["calls"] * 1e5
    load_per100k = r["load_cpu_sec_main"] / main["calls"] * 1e5
    wall = main["calls"] / main["rate_per_sec"]
    a_ms = b["ours"]["A"]["daemon_cpu_sec"] / b["phase"]["calls"] * 1e8
    b_ms = b["ours"]["B"]["daemon_cpu_sec"] / b["phase"]["calls"] * 1e8
    res_ms = 1e3 / CLK_TCK / b["phase"]["calls"] * 1e5
    L.append("")
    L.append(f"4. Daemon CPU per 100k connects: {per100k:.2f} s (record_events: true, {main['calls']:,} connects; "
             f"{r['daemon_cpu_sec_main'] / wall * 100:.0f}% of one core at that rate; "
             f"{per100k / load_per100k:.2f}x the CPU of the load generator itself, {load_per100k:.2f} s)")
    L.append(f"   side by side in the BPF phase ({b['phase']['calls']:,} connects): record_events true {a_ms:.0f} ms vs "
             f"false {b_ms:.0f} ms per 100k (readings in {1e3 / CLK_TCK:.0f} ms ticks: +-{res_ms:.0f} ms per 100k)")

    lat = r["latency"]
    p, q = lat["ping"], lat["summary"]
    xm, x95 = q["median_us"] / p["median_us"], q["p95_us"] / p["p95_us"]
    L.append("")
    L.append(f"5. Summary latency with {r['connects_A']:,} connects recorded, {q['n']} calls each, alternating:")
    L.append(f"   Peer.Ping  median {p['median_us']:7.0f} us  p95 {p['p95_us']:7.0f} us")
    L.append(f"   Summary    median {q['median_us']:7.0f} us  p95 {q['p95_us']:7.0f} us   "
             f"{xm:.2f}x / {x95:.2f}x the ping (goal <= {GOAL_SUMMARY_X_PING:.0f}x: {verdict(xm <= GOAL_SUMMARY_X_PING)})"
             f"{'' if lat['summary_answer_matches'] else '  (answer did NOT match the worker count)'}")

    st, fl = r["startup"], r["startup_floor"]
    L.append("")
    L.append(f"6. exec -> READY=1: {st['A']['sec']:.2f} s, RSS at READY {st['A']['rss_kib'] / 1024:.1f} MB "
             f"(record_events: true); {st['B']['sec']:.2f} s, {st['B']['rss_kib'] / 1024:.1f} MB (false, "
             f"started while the probes compiled)")
    L.append(f"   vs the interpreter importing the same libraries: {fl['sec']:.2f} s, {fl['rss_kib'] / 1024:.1f} MB "
             f"-> {st['A']['sec'] / fl['sec']:.1f}x time, {st['A']['rss_kib'] / fl['rss_kib']:.2f}x RSS")
    return "\n".join(L)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small numbers, for a smoke check")
    p.add_argument("--connects", type=int, help="connects daemon A sees in all (default 1,000,000)")
    p.add_argument("--warm", type=int, help="connects before the first RSS reading (default 10,000)")
    p.add_argument("--bpf-connects", type=int, help="connects of the BPF-cost phase (default 100,000)")
    p.add_argument("--baseline-connects", type=int, help="connects with no netwatchd loaded (default 100,000)")
    p.add_argument("--latency-calls", type=int, help="Summary and Ping calls, each (default 500)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--acceptors", type=int, default=2)
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    defaults = ({"connects": 40_000, "warm": 2_000, "bpf_connects": 10_000, "baseline_connects": 10_000,
                 "latency_calls": 100} if args.quick else
                {"connects": 1_000_000, "warm": 10_000, "bpf_connects": 100_000, "baseline_connects": 100_000,
                 "latency_calls": 500})
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv=None) -> int:
    return run_benchmark("connect_bench", "BPF, bpf_stats, cgroup hooks", parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
