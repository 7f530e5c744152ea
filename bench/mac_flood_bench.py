"""Issue 21: what a MAC flood costs, against the same frame rate from one MAC, side by side.

    .venv/bin/python bench/mac_flood_bench.py [--macs 100000] [--rate 40000] [--phase-sec 6] [--rounds 2]
    (as root, about a minute)

A bridge with two namespaces (tests/support/lan.py): `attacker` writes raw frames on its
port, `sink` is where they go. netwatchd runs on the shipped config (devices.interfaces: the two
ports), and phases alternate at one frame rate:
  quiet  every frame from one source MAC (a busy device);
  flood  every frame from another source MAC, cycling through --macs forged ones (macof).
Per phase: the classifier's BPF ns per frame (nw_tc_ingress + nw_tc_egress, bpf_stats), the
daemon's CPU per tick (utime + stime over the phase's ticks) and its RSS at the end; then the
ratios flood / quiet, and how many mac_flood alerts were raised (the cooldown makes it one).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

import bpf_stats  # noqa: E402
from connect_bench import cpu_sec  # noqa: E402
from tests.support.daemon import DaemonProcess, PrivateSystemBus, unvariant  # noqa: E402
from tests.support import frames  # noqa: E402
from tests.support.lan import Lan  # noqa: E402

TICK_SEC = 1.0  # shipped

# In the attacker's namespace: sends frames (hex on argv[3], one per line in a file) round-robin
# at `rate` a second for `seconds`, in batches paced by the clock; prints how many it sent.
SENDER = r"""
import socket, sys, time
frames = [bytes.fromhex(line) for line in open(sys.argv[1]).read().split()]
rate, seconds = float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
sent, i, start = 0, 0, time.monotonic()
batch = max(1, int(rate / 100))
while True:
    now = time.monotonic() - start
    if now >= seconds:
        break
    due = int(now * rate)
    while sent < due:
        for _ in range(min(batch, due - sent)):
            s.send(frames[i])
            i = (i + 1) % len(frames)
            sent += 1
    time.sleep(0.005)
print(sent)
"""


def forged(n: int):
    return ["%02x:%02x:%02x:%02x:%02x:%02x" % (0x02 if i % 2 else 0x00, 0x66, i >> 24 & 255, i >> 16 & 255, i >> 8 & 255, i & 255)
            for i in range(n)]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--macs", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=40_000)
    p.add_argument("--phase-sec", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    lan, bus, daemon = Lan(), PrivateSystemBus(), None
    workdir = Path("/tmp") / f"nwd-floodbench-{lan.suffix}"
    workdir.mkdir()
    try:
        bus.start()
        attacker = lan.add_node("attacker", "00:16:3e:77:00:01")
        sink = lan.add_node("sink", "00:16:3e:77:00:02")
        daemon = DaemonProcess(bus, {"tick_interval_sec": TICK_SEC, "alerts": {"learning_period_sec": 0},
                                     "state_directory": str(workdir / "state"),
                                     "devices": {"interfaces": lan.ports()}}, about=("devices.interfaces",))
        daemon.start()
        payload = frames.ipv4(attacker.ipv4, sink.ipv4, 17, frames.udp(40000, 9, bytes(18)))
        (workdir / "quiet").write_text(frames.eth(sink.mac, attacker.mac, 0x0800, payload).hex() + "\n")
        (workdir / "flood").write_text("\n".join(frames.eth(sink.mac, mac, 0x0800, payload).hex()
                                                 for mac in forged(args.macs)) + "\n")
        ours = {attacker.port, sink.port}
        deadline = time.monotonic() + 10
        while len(bpf_stats.tcx_links(daemon.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        progs = [link.prog for link in bpf_stats.tcx_links(daemon.pid)]
        results = {"quiet": [], "flood": []}
        with bpf_stats.StatsEnabled():
            for _ in range(args.rounds):
                for phase in ("quiet", "flood"):
                    before, cpu0, t0 = bpf_stats.read_counters(progs), cpu_sec(daemon.pid), time.monotonic()
                    sent = int(lan.python(attacker, SENDER, str(workdir / phase), str(args.rate), str(args.phase_sec),
                                          timeout=args.phase_sec + 60))
                    after, cpu1, t1 = bpf_stats.read_counters(progs), cpu_sec(daemon.pid), time.monotonic()
                    ns = sum(after[q.id][0] - before[q.id][0] for q in progs)
                    runs = sum(after[q.id][1] - before[q.id][1] for q in progs)
                    results[phase].append({"sent": sent, "ns_per_frame": ns / max(1, sent),
                                           "ns_per_run": ns / max(1, runs),
                                           "cpu_ms_per_tick": (cpu1 - cpu0) * 1000 / ((t1 - t0) / TICK_SEC),
                                           "rss_mb": rss_mb(daemon.pid)})
        alerts = [unvariant(a) for a in daemon.call("ListAlerts", "u", 1000)[0]]
        floods = [a for a in alerts if a["kind"] == "mac_flood"]
        new_devices = [a for a in alerts if a["kind"] == "new_device"]
        med = {ph: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for ph, rs in results.items()}
        print(f"MAC flood benchmark: {args.macs} forged MACs at {args.rate:.0f} frames/s vs one MAC at the same rate, "
              f"{args.rounds} x {args.phase_sec:.0f} s per phase (medians)")
        for key, unit in (("ns_per_frame", "BPF ns per frame (ingress + egress)"), ("cpu_ms_per_tick", "daemon CPU ms per tick"),
                          ("rss_mb", "daemon RSS MB")):
            q, f = med["quiet"][key], med["flood"][key]
            print(f"  {unit:38s} quiet {q:9.1f}   flood {f:9.1f}   flood/quiet {f / q if q else float('nan'):.2f}")
        print(f"  frames sent per phase: quiet {med['quiet']['sent']:.0f}, flood {med['flood']['sent']:.0f}")
        print(f"  alerts: {len(floods)} mac_flood ({', '.join(a['subject'] for a in floods)}), {len(new_devices)} new_device;"
              f" devices listed {daemon.get_property('DeviceCount')}; dropped {daemon.get_property('Dropped')}")
        return 0
    finally:
        if daemon is not None:
            daemon.cleanup()
        lan.cleanup()
        bus.stop()
        for f in workdir.glob("*"):
            if f.is_file():
                f.unlink()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
