"""Issue 25's figures: alerts to a real Alertmanager (Debian's prometheus-alertmanager on loopback).

1. delivery latency: an alert emitted (the pipeline's sink call) until Alertmanager's API lists it,
   one alert at a time, the shipped fleet settings (p50/p99 over --alerts);
2. daemon CPU per tick with 1000 alerts firing vs none: two daemons side by side on the shipped
   config (fleet.alertmanager_urls set), one whose spool holds 1000 firing alerts (half about
   devices, whose observers are read back before each re-send, half about commands), over
   --window seconds (one shipped re-send interval: every cycle the 1000 are posted once);
3. spool bytes per alert: that spool's file (with its WAL) over the alerts it holds;
4. series per host at devices.max_devices: /metrics rendered for a full inventory.

    make bench-fleet     (root; ~2 min)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from bench_main import bench_daemon, run_benchmark  # noqa: E402
from connect_bench import cpu_sec  # noqa: E402
from netwatchd.alerting.alerts import Alert  # noqa: E402
from netwatchd.api import fleet_labels  # noqa: E402
from netwatchd.api.fleet_alerts import Entry  # noqa: E402
from netwatchd.api.fleet_sender import FleetSender  # noqa: E402
from netwatchd.api.metrics import Snapshot, render  # noqa: E402
from netwatchd.config import parse_config  # noqa: E402
from netwatchd.errors import NoSuchDevice  # noqa: E402
from netwatchd.read_model import HostIdentity  # noqa: E402
from netwatchd.store.alert_spool import SPOOL_FILE, AlertSpool  # noqa: E402
from tests.support.alertmanager import Alertmanager  # noqa: E402
from tests.support.daemon import PrivateSystemBus  # noqa: E402

IDENTITY = HostIdentity("5e1f0c0ffee0000000000000000000aa", "bench", (("eth0", "192.0.2.0/24@02:00:00:00:00:01"),))


class Model:
    """The little of the read model the sender reads."""

    def __init__(self, url: str):
        self.cfg = parse_config(f"fleet: {{alertmanager_urls: ['{url}']}}")

    def host_identity(self):
        return IDENTITY

    def device(self, mac):
        raise NoSuchDevice(mac)


def alert(n: int, now_usec: int) -> Alert:
    if n % 2:
        return Alert(f"b-{n}", "connect_rate", f"command:cmd{n}", now_usec, f"command cmd{n} storm", 3000, 4, 80,
                     {"command": f"cmd{n}"})
    mac = f"02:00:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"
    return Alert(f"b-{n}", "new_device", f"device:{mac}", now_usec, f"new device {mac}", 1,
                 details={"mac": mac, "vendor": "", "interface": "eth0"})


def latency(am: Alertmanager, count: int) -> Dict:
    with tempfile.TemporaryDirectory() as tmp:
        sender = FleetSender(Model(am.url), lambda: AlertSpool.open(f"{tmp}/{SPOOL_FILE}"))
        try:
            samples = []
            for n in range(count):
                a = alert(100_000 + 2 * n, time.time_ns() // 1000)  # a device alert each
                mac = a.subject.partition(":")[2]
                t0 = time.monotonic()
                sender.emit(a)
                while not am.alerts(mac=mac):
                    time.sleep(0.001)
                samples.append((time.monotonic() - t0) * 1000)
        finally:
            sender.close()
    samples.sort()
    return {"alerts": count, "p50_ms": statistics.median(samples), "p99_ms": samples[int(0.99 * (len(samples) - 1))],
            "max_ms": samples[-1]}


def fill_spool(state: Path, count: int) -> int:
    state.mkdir(parents=True, exist_ok=True)
    spool = AlertSpool.open(str(state / SPOOL_FILE))
    now = time.time()
    entries = []
    for n in range(count):
        a = alert(n, int(now * 1e6))
        labels = fleet_labels.labels(a, IDENTITY)
        notes = dict(fleet_labels.annotations(a, IDENTITY), generator_url="http://bench:9637/metrics")
        entries.append(Entry(fleet_labels.fingerprint(labels), labels, notes, now, now + 3600,
                             observers={IDENTITY.host}, seq=n + 1).to_json())
    spool.write(entries)
    spool.close()
    return count


def cpu_per_tick(am: Alertmanager, args) -> Dict:
    with tempfile.TemporaryDirectory() as tmp:
        busy, idle = Path(tmp) / "busy", Path(tmp) / "idle"
        fill_spool(busy, args.firing)
        fleet = {"alertmanager_urls": [am.url]}
        with PrivateSystemBus() as bus1, PrivateSystemBus() as bus2, \
                bench_daemon(bus1, {"state_directory": str(busy), "fleet": fleet}) as d_busy, \
                bench_daemon(bus2, {"state_directory": str(idle), "fleet": fleet}) as d_idle:
            time.sleep(2.0)  # past the busy one's first post of its 1000 (in the window too: its re-send)
            c_busy, c_idle = cpu_sec(d_busy.pid), cpu_sec(d_idle.pid)
            time.sleep(args.window)
            busy_sec, idle_sec = cpu_sec(d_busy.pid) - c_busy, cpu_sec(d_idle.pid) - c_idle
            firing = d_busy.get_property("FleetDelivery")
            spool_bytes = (busy / SPOOL_FILE).stat().st_size
            wal = busy / (SPOOL_FILE + "-wal")
            wal_bytes = wal.stat().st_size if wal.exists() else 0
    ticks = args.window / 1.0  # the shipped tick_interval_sec
    return {"window_sec": args.window, "busy_ms_per_tick": busy_sec / ticks * 1000,
            "idle_ms_per_tick": idle_sec / ticks * 1000, "ratio": busy_sec / idle_sec if idle_sec else 0.0,
            "fleet_delivery": {k: int(v) for k, v in dict(firing).items()} if firing else {},
            "spool_bytes": spool_bytes, "wal_bytes": wal_bytes, "spool_bytes_per_alert": spool_bytes / args.firing}


def series_at_max_devices() -> Dict:
    cfg = parse_config("")
    max_devices = cfg.devices.max_devices
    snap = Snapshot(identity=IDENTITY, version="bench", devices=max_devices,
                    devices_seen=[("192.0.2.0/24@02:00:00:00:00:01", f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}",
                                   "Vendor", 1.7e9) for n in range(max_devices)])
    lines = [line for line in render(snap, cfg.metrics.top_commands).splitlines() if line and line[0] != "#"]
    device = sum(1 for line in lines if line.startswith("netwatchd_device_"))
    return {"max_devices": max_devices, "series": len(lines), "device_series": device, "other_series": len(lines) - device}


def run(args) -> Dict:
    am = Alertmanager().start()
    try:
        return {"latency": latency(am, args.alerts), "cpu": cpu_per_tick(am, args), "series": series_at_max_devices()}
    finally:
        am.cleanup()


def report(r: Dict) -> str:
    lat, cpu, s = r["latency"], r["cpu"], r["series"]
    return "\n".join([
        f"delivery latency, event -> Alertmanager lists it ({lat['alerts']} alerts, one at a time): "
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms",
        f"daemon CPU per tick over {cpu['window_sec']:.0f} s, side by side: {cpu['busy_ms_per_tick']:.2f} ms with "
        f"{cpu['fleet_delivery'].get('firing', '?')} alerts firing vs {cpu['idle_ms_per_tick']:.2f} ms with none "
        f"= {cpu['ratio']:.2f}x",
        f"spool: {cpu['spool_bytes']} bytes for {cpu['fleet_delivery'].get('spooled', '?')} alerts = "
        f"{cpu['spool_bytes_per_alert']:.0f} bytes per alert (its WAL beside it: {cpu['wal_bytes']} bytes, "
        f"at most 1 MiB after a checkpoint)",
        f"series per host at devices.max_devices={s['max_devices']}: {s['series']} "
        f"({s['device_series']} device series, {s['other_series']} others)",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alerts", type=int, default=200, help="alerts timed one at a time (default 200)")
    p.add_argument("--firing", type=int, default=1000, help="firing alerts in the busy daemon's spool (default 1000)")
    p.add_argument("--window", type=float, default=62.0, help="seconds of CPU measured (default 62: one re-send)")
    p.add_argument("--results-dir", default=str(BENCH / "results"))
    return run_benchmark("fleet_bench", "BPF, a private bus, Alertmanager", p.parse_args(), run, report)


if __name__ == "__main__":
    sys.exit(main())
