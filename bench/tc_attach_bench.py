"""clsact filters vs TCX links for netwatchd's classifier (issue 9), side by side in one run.

    .venv/bin/python bench/tc_attach_bench.py            (make bench-tc; as root; about 1.5 minutes)
    .venv/bin/python bench/tc_attach_bench.py --quick    (smoke check: short phases)

The direct path of bench/device_bench.py: one device namespace whose veth peer is a plain host
interface; its senders' frames go to a MAC nobody has, so the host drops them right after our
ingress hook -- the highest packet rate, where an attach path's cost would show most. netwatchd
watches that interface, restarted between phases with devices.tc_attach alternating tcx / tc
(rounds of both, so drift on this shared machine hits both alike). Per phase: the BPF ns per
packet of nw_tc_ingress (kernel.bpf_stats_enabled run time / run count of exactly the program
the daemon attached: its TCX link, or the clsact filter's program id), and the packets per
second the senders reach.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import bpf_stats  # noqa: E402
from bench_main import bench_daemon, run_benchmark  # noqa: E402
from connect_bench import host_info, progress  # noqa: E402
from device_bench import RESULTS, Link, Senders, build_sender  # noqa: E402
from tests.support.daemon import DaemonProcess, PrivateSystemBus  # noqa: E402

PATHS = ("tcx", "tc")


def ingress_prog(daemon: DaemonProcess, link: Link, path: str) -> bpf_stats.Prog:
    """The program the daemon attached to the direct port's ingress, by the path it took."""
    port = link.direct
    if path == "tcx":
        for l in bpf_stats.tcx_links(daemon.pid):
            if l.ifindex == port.ifindex and l.attach_type == 46:
                return l.prog
        raise RuntimeError(f"no TCX ingress link of netwatchd on {port.port}")
    out = subprocess.run(["tc", "-j", "filter", "show", "dev", port.port, "ingress"], capture_output=True,
                         text=True, check=True).stdout
    for f in json.loads(out or "[]"):
        prog = f.get("options", {}).get("prog", {})
        if prog.get("name") == "nw_tc_ingress":
            return bpf_stats.Prog(int(prog["id"]), daemon.pid, -1)
    raise RuntimeError(f"no clsact filter of netwatchd on {port.port}")


def phase(bus: PrivateSystemBus, link: Link, senders: Senders, path: str, msec: int, state: str) -> Dict:
    config = {"state_directory": state, "tick_interval_sec": 0.25,
              "devices": {"interfaces": [link.direct.port], "tc_attach": path}}
    with bench_daemon(bus, config) as daemon:
        prog = ingress_prog(daemon, link, path)
        attached = [p for p in daemon.get_property("ProgramsAttached") if p.startswith("nw_tc_ingress@")]
        with bpf_stats.StatsEnabled():
            before = bpf_stats.read_counters([prog])
            ph = senders.run(f"{path}", "t", msec, labels=[link.direct.label])
            after = bpf_stats.read_counters([prog])
        run = bpf_stats.per_run(before, after, prog)
    ns = run["ns_per_run"]
    progress(f"  {path:4s} {attached}: {ph.rate:,.0f} packets/s, "
             f"{ns:.1f} ns/packet" if ns else f"  {path}: no runs counted")
    return {"path": path, "attached": attached, "packets_per_sec": ph.rate, "sent": ph.total, "errors": ph.errors,
            "sec": ph.sec, "bpf_ns_per_packet": ns, "bpf_runs": run["runs"]}


def run(args) -> Dict:
    rounds, msec = (1, 1500) if args.quick else (args.rounds, args.phase_msec)
    phases: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="nwd-tcbench-") as tmp, PrivateSystemBus() as bus, \
            Link(1) as link:
        command, sender_kind = build_sender(tmp)
        senders = Senders(command, link, direct_procs=2).start()
        try:
            senders.run("warm-up", "t", 500, labels=[link.direct.label])
            for r in range(rounds):
                progress(f"round {r + 1}/{rounds}")
                for path in (PATHS if r % 2 == 0 else PATHS[::-1]):
                    phases.append(phase(bus, link, senders, path, msec, f"{tmp}/state"))
        finally:
            senders.stop()
    summary = {}
    for path in PATHS:
        mine = [p for p in phases if p["path"] == path]
        summary[path] = {"bpf_ns_per_packet": statistics.median(p["bpf_ns_per_packet"] for p in mine),
                         "packets_per_sec": statistics.median(p["packets_per_sec"] for p in mine)}
    # each round's two phases ran back to back: their ratio cancels most of the drift between rounds
    paired = [(by["tc"], by["tcx"]) for by in ({p["path"]: p for p in phases[i:i + 2]}
                                               for i in range(0, len(phases), 2))]
    summary["paired_median"] = {
        "bpf_ns_ratio": statistics.median(tc["bpf_ns_per_packet"] / tcx["bpf_ns_per_packet"] for tc, tcx in paired),
        "rate_ratio": statistics.median(tc["packets_per_sec"] / tcx["packets_per_sec"] for tc, tcx in paired)}
    return {"host": host_info(), "sender": sender_kind, "phases": phases, "summary": summary,
            "clsact_vs_tcx": {"bpf_ns_ratio": summary["tc"]["bpf_ns_per_packet"] / summary["tcx"]["bpf_ns_per_packet"],
                              "rate_ratio": summary["tc"]["packets_per_sec"] / summary["tcx"]["packets_per_sec"]}}


def report(r: Dict) -> str:
    s, x = r["summary"], r["clsact_vs_tcx"]
    return "\n".join([
        f"clsact filters vs TCX links, {len(r['phases'])} phases (median per path), sender: {r['sender']}",
        f"  BPF ns per packet (nw_tc_ingress): TCX {s['tcx']['bpf_ns_per_packet']:.1f}, "
        f"clsact {s['tc']['bpf_ns_per_packet']:.1f}  (clsact/TCX {x['bpf_ns_ratio']:.2f})",
        f"  sender packets/s:                  TCX {s['tcx']['packets_per_sec']:,.0f}, "
        f"clsact {s['tc']['packets_per_sec']:,.0f}  (clsact/TCX {x['rate_ratio']:.2f})",
        f"  round by round (back-to-back phases), median clsact/TCX: BPF ns {s['paired_median']['bpf_ns_ratio']:.2f}, "
        f"packets/s {s['paired_median']['rate_ratio']:.2f}",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--phase-msec", type=int, default=4000)
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args()
    return run_benchmark("tc-attach", "BPF programs, namespaces, tc", args, run, report)


if __name__ == "__main__":
    sys.exit(main())
