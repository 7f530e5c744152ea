"""The device-path benchmarks of issue 3, each a ratio of figures measured side by side in one run.

    .venv/bin/python bench/device_bench.py            (make bench-devices; as root; about 2 minutes)
    .venv/bin/python bench/device_bench.py --quick    (smoke check: short phases, < 30 s)

  1. BPF ns per packet of netwatchd's classifier (nw_tc_ingress + nw_tc_egress, bpf_stats)
     against floor classifiers attached in the same run on the same interfaces: one that bumps
     a per-CPU counter, one that bumps a counter keyed by the device's MAC in a hash, and a
     reference that emits a ring-buffer record per packet with the default wakeup.
  2. Packets per second the devices send with netwatchd attached vs not, alternating phases in
     one run (and, for scale, with the reference classifier attached instead), on two paths:
     across the bridge to the sink, and straight into the host over one veth pair.
  3. Per-device UDP packet counts (D-Bus GetDevice) against each sender's own count, with every
     device on both paths sending at full speed at once.

The link: a bridge in the host namespace; device namespaces and a sink namespace hang off it by
veth pairs. netwatchd watches every port (as `interfaces: auto` would): a frame from a device
crosses nw_tc_ingress on that device's port (tx of the device) and nw_tc_egress on the sink's
port (rx of the sink). Devices send 60-byte UDP frames (sendmmsg, one sender process per device)
to a socket in the sink that is never read. ARP and the sink's bridge entry are static and IPv6
is off, so the link carries nothing but the senders' UDP.
The direct path: one more device namespace whose veth peer is a plain host interface (no
bridge, no address); its frames go to a MAC nobody has, so the host drops them on arrival
(PACKET_OTHERHOST, right after our ingress hook): the cheapest path a frame can take, the
highest packet rate, the most our classifier can slow a sender down. Two sender processes there.

Names carry this process's id; every namespace, link and process started here is removed here
(by name and by pid), on error, Ctrl-C and SIGTERM too. Traffic stays on these links: the bridge
has no address and no other port, and the direct port's frames die on arrival.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]


import bpf_stats  # noqa: E402
from bench_main import bench_daemon, run_benchmark  # noqa: E402
from connect_bench import cpu_sec, host_info, progress, shielded_cleanup, verdict  # noqa: E402
from device_floors import FloorClassifiers  # noqa: E402
from tests.support.daemon import DaemonProcess, PrivateSystemBus  # noqa: E402

from device_link import Link  # noqa: E402
from device_senders import build_sender, Phase, Senders  # noqa: E402
from device_daemon import daemon_config, set_attached, watched_elsewhere, our_programs, hook_chains, foreign_programs, settled_counters, dbus_property  # noqa: E402
RESULTS = BENCH / "results"
GOAL_BPF_X_FLOOR = 3.0
GOAL_RATE_RATIO = 0.95


# -- the figures ------------------------------------------------------------------------------
def bpf_phase(senders: Senders, daemon: DaemonProcess, floors: FloorClassifiers, link: Link, msec: int) -> Dict:
    """Ours, the floors and the reference on every port at once, stats on; `msec` of traffic
    from the bridged devices, then `msec` from the direct device, each read separately."""
    ours = our_programs(daemon, link)
    yard = {fn: bpf_stats.prog_of_fd(floors.pid, fd) for fn, fd in floors.fds.items()}
    named = {**ours, **yard}
    floors.attach(["floor_count", "floor_mac", "ref_ring"], [s.ifindex for s in link.stations])
    out: Dict = {}
    try:
        known = {p.id: name for name, p in named.items()}
        out["hooks"] = {hook: [known.get(i, f"foreign prog {i}") for i in ids] for hook, ids in hook_chains(link).items()}
        with bpf_stats.StatsEnabled():
            for path, labels in (("bridge", [d.label for d in link.devices]), ("direct", [link.direct.label])):
                consumed0 = floors.read_consumed()
                before = bpf_stats.read_counters(named.values())
                phase = senders.run("bpf", "t", msec, labels)
                time.sleep(0.05)  # the backlogs drain
                after = bpf_stats.read_counters(named.values())
                out[path] = bpf_figures(before, after, named, phase)
                out[path]["reference_records_consumed"] = floors.read_consumed() - consumed0
    finally:
        floors.detach()
    return out


def bpf_figures(before: Dict, after: Dict, named: Dict[str, bpf_stats.Prog], phase: Phase) -> Dict:
    per = {name: bpf_stats.per_run(before, after, p) for name, p in named.items()}
    packets = per["floor_count_in"]["runs"]  # every frame that entered a port from a namespace

    def per_packet(names: List[str]) -> Optional[float]:
        return sum(per[n]["run_time_ns"] for n in names) / packets if packets else None

    return {
        "phase": phase.as_dict(),
        "programs": per,
        "frames_into_ports": packets,
        "frames_out_of_ports": per["floor_count_eg"]["runs"],
        "per_packet_ns": {
            "ours": per_packet(["nw_tc_ingress", "nw_tc_egress"]),
            "floor_count": per_packet(["floor_count_in", "floor_count_eg"]),
            "floor_mac": per_packet(["floor_mac_in", "floor_mac_eg"]),
            "reference": per_packet(["ref_ring_in"]),
        },
    }


def rate_phases(senders: Senders, daemon: DaemonProcess, floors: FloorClassifiers, link: Link, pairs: int,
                msec: int) -> List[Phase]:
    """(off, on, off, floor) x pairs, off, reference, off: netwatchd attached or not (the daemon
    keeps running), the counter floor or the reference attached alone; every one of them between
    two `off`s. Each step: the bridged devices for `msec`, then the direct device for `msec`."""
    plan = ["off", "on", "off", "floor"] * pairs + ["off", "reference", "off"]
    phases = []
    attached = None
    set_attached(daemon, link, True)
    known = {p.id for p in our_programs(daemon, link).values()}
    known |= {bpf_stats.prog_of_fd(floors.pid, fd).id for fd in floors.fds.values()}
    yardstick = {"floor": "floor_count", "reference": "ref_ring"}
    for i, what in enumerate(plan):
        want = what == "on"
        if attached != want:
            set_attached(daemon, link, want)
            attached = want
        if what in yardstick:
            floors.attach([yardstick[what]], [s.ifindex for s in link.stations])
        if i % 4 == 0 or i == len(plan) - 1:
            progress(f"rate phase {i + 1}/{len(plan)}")
        try:
            for path, labels in (("bridge", [d.label for d in link.devices]), ("direct", [link.direct.label])):
                cpu0 = cpu_sec(daemon.pid)
                phase = senders.run(what, "t", msec, labels, monitors=[daemon.pid, floors.pid])
                phase.daemon_cpu_sec = cpu_sec(daemon.pid) - cpu0
                phase.path = path
                phase.foreign = foreign_programs(link, known)
                phases.append(phase)
        finally:
            if what in yardstick:
                floors.detach()
    return phases


def exact_phase(senders: Senders, daemon: DaemonProcess, link: Link, count: int) -> Dict:
    set_attached(daemon, link, True)
    before = settled_counters(daemon, link)
    drops0 = link.drops()
    lost0 = dbus_property(daemon, "DeviceEventsLost")
    cpu0 = cpu_sec(daemon.pid)
    phase = senders.run("exact", "n", count)
    after = settled_counters(daemon, link)
    phase.daemon_cpu_sec = cpu_sec(daemon.pid) - cpu0
    drops = {k: v - drops0[k] for k, v in link.drops().items()}

    def delta(label: str, key: str) -> int:
        return after[label].get(key, 0) - before[label].get(key, 0)

    rows = []
    for d in link.senders:
        sent = phase.sent[d.label]
        row = {"device": d.label, "path": "bridge" if d.bridged else "direct", "mac": d.mac, "sent": sent, "tx_udp_packets": delta(d.label, "tx_udp_packets"),
               "tx_udp_bytes": delta(d.label, "tx_udp_bytes"),
               "tx_other_packets": sum(delta(d.label, k) for k in after[d.label]
                                       if k.startswith("tx_") and k.endswith("_packets") and k != "tx_udp_packets")}
        row["exact"] = row["tx_udp_packets"] == sent and row["tx_udp_bytes"] == sent * 60
        rows.append(row)
    sink_rx = delta("s", "rx_udp_packets")
    bridged_sent = sum(phase.sent[d.label] for d in link.devices)
    return {
        "phase": phase.as_dict(),
        "count_per_device": count,
        "devices": rows,
        "all_exact": all(r["exact"] for r in rows),
        "sink_rx_udp_packets": sink_rx,
        "sink_exact": sink_rx == bridged_sent,
        "bridged_sent": bridged_sent,
        "drops_before_hook": drops,
        "device_events_lost": (dbus_property(daemon, "DeviceEventsLost") or 0) - (lost0 or 0),
        "malformed_frames": dbus_property(daemon, "MalformedFrames"),
    }


# -- the run ----------------------------------------------------------------------------------
def run(args) -> Dict:
    r: Dict = {"host": host_info(), "devices": args.devices, "direct_procs": args.direct_procs}
    with shielded_cleanup() as stack:
        workdir = tempfile.mkdtemp(prefix="nwd-devbench-")
        stack.callback(shutil.rmtree, workdir, True)
        floors = stack.enter_context(FloorClassifiers())  # compiles while the rest starts
        sender_cmd, r["sender"] = build_sender(workdir)
        progress(f"link: bridge, {args.devices} device namespaces and a sink; a direct device")
        link = stack.enter_context(Link(args.devices))
        r["link"] = {"bridge": link.bridge, "stations": [vars(s) for s in link.stations]}
        senders = stack.enter_context(Senders(sender_cmd, link, args.direct_procs))

        progress("netwatchd, watching every port")
        bus = stack.enter_context(PrivateSystemBus())
        daemon = bench_daemon(bus, daemon_config(link, True))
        stack.callback(daemon.cleanup)
        daemon.start()
        floors.wait_loaded()
        senders.run("warm", "t", 300)  # devices known, caches warm
        settled_counters(daemon, link)

        progress(f"BPF cost: {args.bpf_msec} ms of traffic per path; netwatchd, floors and reference attached, stats on")
        r["bpf"] = bpf_phase(senders, daemon, floors, link, args.bpf_msec)

        progress(f"packet rate: {args.pairs} x (off, on, off, floor), {args.rate_msec} ms per phase and path")
        r["rate_phases"] = [p.as_dict() for p in rate_phases(senders, daemon, floors, link, args.pairs,
                                                             args.rate_msec)]

        progress(f"exactness: {args.count:,} datagrams from each sender process, all at once")
        r["exact"] = exact_phase(senders, daemon, link, args.count)
        r["watched_other_interfaces"] = watched_elsewhere(daemon, link)
        log_lines = daemon.log().splitlines()
        # detaching on reload is logged as "interface X is gone" (our off phases): count those
        r["daemon_detach_warnings"] = sum(1 for line in log_lines if "is gone; will watch it again" in line)
        r["daemon_log_warnings"] = [line for line in log_lines if ("WARNING" in line or "ERROR" in line)
                                    and "is gone; will watch it again" not in line][-20:]
    return r


# -- the report -------------------------------------------------------------------------------
def rate_summary(phases: List[Dict], path: str, key: str) -> Dict:
    """Each `on`, `floor` and `reference` phase against the mean of the `off` phases either side,
    by `key` (packets_per_sec: wall clock; packets_per_cpu_sec: per CPU-second)."""
    phases = [p for p in phases if p["path"] == path]
    out: Dict = {"on": [], "floor": [], "reference": []}
    for i, p in enumerate(phases):
        if p["name"] in out:
            around = statistics.mean([phases[i - 1][key], phases[i + 1][key]])
            out[p["name"]].append({"rate": p[key], "off_around": around, "ratio": p[key] / around})
    for name in ("on", "floor", "reference"):
        out[f"{name}_ratio"] = statistics.median(row["ratio"] for row in out[name])
    on = [p[key] for p in phases if p["name"] == "on"]
    off = [p[key] for p in phases if p["name"] == "off"]
    out["on_mean"], out["off_mean"] = statistics.mean(on), statistics.mean(off)
    out["on_ratio_of_means"] = out["on_mean"] / out["off_mean"]
    out["phases"] = [(p["name"], p[key]) for p in phases]
    return out


def report(r: Dict) -> str:
    L: List[str] = []
    h = r["host"]
    L.append(f"netwatchd device benchmark  {h['time']}  kernel {h['kernel']}, {h['cpus']} CPUs, "
             f"load avg {' '.join('%.2f' % x for x in h['loadavg'])} at start")
    L.append(f"link: bridge {r['link']['bridge']} with {r['devices']} device namespaces + 1 sink on veth pairs, and 1 "
             f"device on a veth pair straight into the host; netwatchd on every port (ingress + egress); senders: {r['sender']}, 60-byte UDP frames, "
             f"one process per bridged device; all ratios taken side by side in this run")

    hooks = r["bpf"]["hooks"]
    ours_first = all(chain[0] in ("nw_tc_ingress", "nw_tc_egress") for chain in hooks.values() if chain)
    foreign = sorted({p for chain in hooks.values() for p in chain if p.startswith("foreign")})
    sample = next(k for k in hooks if k.endswith("ingress") and hooks[k])
    L.append("")
    L.append("1. BPF ns per packet (bpf_stats run_time_ns / run_cnt by program id); ours, the floors and the reference attached")
    L.append(f"   at once on every port; order on {sample}: {' -> '.join(hooks[sample])}"
             f" (ours first on every hook: {ours_first})"
             + (f"; ALSO ATTACHED by others: {', '.join(foreign)}" if foreign else ""))
    for path, title in (("bridge", f"bridge: {r['devices']} devices -> sink, a frame crosses ingress of its port and "
                                   f"egress of the sink's"),
                        ("direct", f"direct: 1 device, {r['direct_procs']} senders (both CPUs count the same device)"
                                   f", ingress only")):
        b = r["bpf"][path]
        P, pp = b["programs"], b["per_packet_ns"]
        L.append(f"   {title}: {b['frames_into_ports']:,} frames in, {b['frames_out_of_ports']:,} out, "
                 f"{b['phase']['sec']:.1f} s")
        L.append(f"     {'':42s} {'ingress':>8s} {'egress':>8s} {'per packet':>11s} {'x floor':>8s} {'x MAC floor':>11s}")

        def row(label, a, e, per):
            fmt = lambda v: f"{v:8.0f}" if v is not None else f"{'-':>8s}"  # noqa: E731
            return (f"     {label:42s} {fmt(a)} {fmt(e)} {per:11.0f} {per / pp['floor_count']:7.2f}x "
                    f"{per / pp['floor_mac']:10.2f}x")

        for label, a, e, key in (("floor: per-CPU counter only", "floor_count_in", "floor_count_eg", "floor_count"),
                                 ("floor: counter keyed by MAC in a hash", "floor_mac_in", "floor_mac_eg", "floor_mac"),
                                 ("netwatchd nw_tc_ingress + nw_tc_egress", "nw_tc_ingress", "nw_tc_egress", "ours"),
                                 ("reference: ring record per packet, wakeup", "ref_ring_in", None, "reference")):
            L.append(row(label, P[a]["ns_per_run"], P[e]["ns_per_run"] if e else None, pp[key]))
        x = pp["ours"] / pp["floor_count"]
        L.append(f"     netwatchd per packet {x:.2f}x the counter floor (goal <= {GOAL_BPF_X_FLOOR:.0f}x: "
                 f"{verdict(x <= GOAL_BPF_X_FLOOR)}), {pp['ours'] / pp['floor_mac']:.2f}x the MAC floor, "
                 f"{pp['ours'] / pp['reference']:.3f}x the reference; reference consumer read "
                 f"{b['reference_records_consumed']:,} records; senders at {b['phase']['packets_per_sec']:,.0f}/s")
    L.append("")
    L.append("2. Sender packets/s with netwatchd attached (on) vs not (off); the daemon runs throughout. Phases alternate")
    L.append(f"   (off on off floor ... off reference off, {r['rate_phases'][0]['sec']:.1f} s each); each is compared with the mean of")
    L.append("   the offs either side, and the verdict is on the median of those ratios, in packets per CPU-second (senders +")
    L.append("   ksoftirqd + daemon + reference consumer): the rate per core we get, which the other engineers' load on the")
    L.append("   2 cores does not move; the wall-clock rate swings by tens of percent from one second to the next here.")
    r["rate_summary"] = {}
    for path, desc in (("bridge", f"bridge, {r['devices']} devices -> sink: ingress + egress hook per packet"),
                       ("direct", f"direct veth into the host, {r['direct_procs']} senders: ingress hook only")):
        cpu = rate_summary(r["rate_phases"], path, "packets_per_cpu_sec")
        wall = rate_summary(r["rate_phases"], path, "packets_per_sec")
        r["rate_summary"][path] = {"per_cpu_sec": cpu, "wall": wall}
        phases = [p for p in r["rate_phases"] if p["path"] == path]
        on = [p for p in phases if p["name"] == "on"]
        L.append(f"   {desc}")
        L.append("     per CPU-s: " + " ".join(f"{name} {rate / 1e3:,.0f}k" for name, rate in cpu["phases"]))
        L.append("     wall:      " + " ".join(f"{name} {rate / 1e3:,.0f}k" for name, rate in wall["phases"]))
        pairs = ", ".join(f"{row['ratio']:.3f}" for row in cpu["on"])
        L.append(f"     netwatchd/without per pair: {pairs}")
        L.append(f"     netwatchd: median {cpu['on_ratio']:.3f}x per CPU-s (goal >= {GOAL_RATE_RATIO}: "
                 f"{verdict(cpu['on_ratio'] >= GOAL_RATE_RATIO)}; ratio of means {cpu['on_ratio_of_means']:.3f}); "
                 f"wall clock: median {wall['on_ratio']:.3f}x, means {wall['on_mean']:,.0f} vs {wall['off_mean']:,.0f}/s")
        L.append(f"     for scale, alone instead of netwatchd: counter floor {cpu['floor_ratio']:.3f}x, reference "
                 f"{cpu['reference_ratio']:.3f}x per CPU-s ({wall['floor_ratio']:.3f}x, {wall['reference_ratio']:.3f}x wall)")
        L.append(f"     daemon CPU while attached {statistics.mean(p['daemon_cpu_sec'] / p['sec'] for p in on) * 100:.1f}% "
                 f"of a core; ksoftirqd {sum(p['ksoftirqd_sec'] for p in phases) / sum(p['cpu_sec'] for p in phases) * 100:.1f}% "
                 f"of the senders' CPU")
    foreign = {hook: ids for p in r["rate_phases"] for hook, ids in p["foreign_programs"].items()}
    if foreign:
        L.append(f"   NOTE: programs of others were attached to our ports during these phases: {foreign}")

    e = r["exact"]
    ph = e["phase"]
    drops = e["drops_before_hook"]
    L.append("")
    L.append(f"3. Per-device counts at full rate: every sender process ({ph['processes']}) sends "
             f"{e['count_per_device']:,} datagrams, all at once: {ph['packets_per_sec']:,.0f} packets/s in all "
             f"({ph['total']:,} in {ph['sec']:.1f} s)")
    for d in e["devices"]:
        L.append(f"   device {d['device']} ({d['path']}) {d['mac']}: sent {d['sent']:,}, GetDevice tx_udp_packets "
                 f"{d['tx_udp_packets']:,} ({d['tx_udp_bytes']:,} bytes), other tx {d['tx_other_packets']:,}"
                 f"{'  exact' if d['exact'] else '  <-- MISMATCH'}")
    L.append(f"   all exact: {verdict(e['all_exact'])}; sink rx_udp_packets {e['sink_rx_udp_packets']:,} of the "
             f"{e['bridged_sent']:,} the bridged devices sent ({'exact' if e['sink_exact'] else 'MISMATCH'}); "
             f"DeviceEventsLost +{e['device_events_lost']}, MalformedFrames {e['malformed_frames']}")
    L.append(f"   drops before our ingress hook: {sum(drops.values())} ({', '.join(f'{k} {v}' for k, v in drops.items())})")
    L.append("")
    if r["watched_other_interfaces"]:
        L.append(f"WARNING: the daemon watched interfaces other than the bench's: {r['watched_other_interfaces']}")
    L.append(f"daemon log: {r['daemon_detach_warnings']} 'interface ... is gone' warnings from the reloads that "
             f"detached it, {len(r['daemon_log_warnings'])} other warnings/errors")
    if r.get("daemon_log_warnings"):
        L.append("")
        L.append("daemon warnings/errors:")
        L.extend("   " + line for line in r["daemon_log_warnings"])
    return "\n".join(L)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short phases, for a smoke check (< 30 s)")
    p.add_argument("--devices", type=int, default=3, help="device namespaces on the bridge (default 3)")
    p.add_argument("--direct-procs", type=int, default=2, help="sender processes of the direct device (default 2)")
    p.add_argument("--bpf-msec", type=int, help="traffic of the BPF-cost phase (default 5000)")
    p.add_argument("--rate-msec", type=int, help="length of each packet-rate phase and path (default 1000)")
    p.add_argument("--pairs", type=int, help="(off, on, off, floor) rounds of packet-rate phases (default 8)")
    p.add_argument("--count", type=int, help="datagrams each device sends in the exactness phase (default 1,000,000)")
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    defaults = ({"bpf_msec": 1000, "rate_msec": 400, "pairs": 2, "count": 100_000} if args.quick else
                {"bpf_msec": 5000, "rate_msec": 1000, "pairs": 8, "count": 1_000_000})
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not 1 <= args.devices <= 20:
        p.error("--devices: 1 to 20")
    return args


def main(argv=None) -> int:
    return run_benchmark("device_bench", "BPF, bpf_stats, network namespaces", parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
