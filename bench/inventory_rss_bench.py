"""Issue 21: the daemon's memory and inventory file with 4096 fully loaded devices, this
checkout against an earlier commit, side by side in one run (no root, no kernel).

    .venv/bin/python bench/inventory_rss_bench.py [--base REV] [--devices N] [--rounds K]

Each device sends what a hostile one can: 300 DNS questions, 300 HTTP requests and 300 TLS
ClientHellos, each naming a different name of ~250 bytes, and 100 first-seen peers -- more than
any per-device bound, before or after. The events are the ring buffer's own bytes (bpf/device.h,
unchanged between the two), fed through each version's DeviceMonitor and saved into each
version's SQLite inventory. Each version runs in a process of its own (PYTHONPATH at its tree):
RSS growth over an empty monitor, the inventory file's size, the save's time. The earlier tree
is a `git worktree` of REV in a temporary directory, removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = "d9f020b"  # the last commit before issue 21
NAME_BYTES = 250


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def name(device: int, i: int) -> str:
    head = f"d{device:04d}n{i:03d}"
    return ".".join([head + "a" * (62 - len(head)), "b" * 62, "c" * 62, "d" * (NAME_BYTES - 3 * 63 - 5), "test"])


def child(devices: int) -> None:
    """Runs inside one version's tree: builds, feeds and saves; prints one JSON line."""
    from netwatchd.config import DevicesConfig
    from netwatchd.devices import records
    from netwatchd.devices.monitor import DeviceMonitor
    from netwatchd.store.inventory import InventoryStore

    size = records.EVENT_SIZE

    class Probe:
        raw = []

        def drain(self):
            raw, Probe.raw = Probe.raw, []
            return raw

        def read_counters(self):
            make = getattr(records, "readings_from_counters", None)
            return make({}) if make else {}

        def losses(self):
            make = getattr(records, "DeviceLosses", None)  # a dict before it
            return make() if make else {"ring_full": 0, "devices_full": 0, "malformed": 0}

        def attached(self):
            return []

    def event(kind, mac, app=0, direction=0, transport=0, daddr="10.0.0.1", dport=0, sport=40000, payload=b""):
        ev = records.DevEvent()
        ev.boot_ns, ev.ifindex, ev.kind, ev.app, ev.direction, ev.transport = 1, 0, kind, app, direction, transport
        ev.mac[:] = list(mac)
        ev.family, ev.sport, ev.dport = 2, sport, dport
        ev.saddr[:4] = list(socket.inet_aton("10.9.0.1"))
        ev.daddr[:4] = list(socket.inet_aton(daddr))
        raw = bytes(ev)[:size]
        if kind == records.EV_SNIPPET:
            ev.snap_len = len(payload)
            raw = bytes(ev) + payload.ljust(records.SNIP_LEN, b"\0")[: records.SNIP_LEN]
        return raw

    def dns(n):
        q = b"".join(bytes([len(label)]) + label.encode() for label in n.split(".")) + b"\0"
        return struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + q + b"\0\1\0\1"

    def hello(n):
        sni = n.encode()
        ext = struct.pack("!HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
        body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack("!H", len(ext)) + ext
        hs = b"\x01" + len(body).to_bytes(3, "big") + body
        return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs

    tmp = tempfile.mkdtemp(prefix="nwd-rssbench-")
    try:
        store = InventoryStore.open(os.path.join(tmp, "inventory.sqlite3"))
        mon = DeviceMonitor(Probe(), DevicesConfig(), type("V", (), {"lookup": lambda self, m: ""})(), store,
                            list_interfaces=dict, if_name=lambda i: "")
        before = rss_mb()
        for d in range(devices):
            mac = bytes([0x00, 0x1B, 0x21, d >> 16 & 0xFF, d >> 8 & 0xFF, d & 0xFF])
            batch = []
            for i in range(300):
                n = name(d, i)
                batch.append(event(records.EV_SNIPPET, mac, app=1, transport=17, dport=53, payload=dns(n)))
                batch.append(event(records.EV_SNIPPET, mac, app=3, transport=6, dport=80,
                                   payload=f"GET /{'p' * 200} HTTP/1.1\r\nHost: {n}\r\n\r\n".encode()))
                batch.append(event(records.EV_SNIPPET, mac, app=4, transport=6, dport=443, payload=hello(n)))
                if i < 100:
                    batch.append(event(records.EV_PATTERN, mac, transport=6, daddr=f"10.8.{i}.1", dport=443))
            Probe.raw = batch
            mon.poll()
        fed = rss_mb()
        started = time.perf_counter()
        mon.save(everything=True) if "everything" in mon.save.__code__.co_varnames else mon.save()
        saved_sec = time.perf_counter() - started
        store.close()
        file_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
        print(json.dumps({"devices": len(mon.devices), "rss_growth_mb": round(fed - before, 1),
                          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                          "inventory_mb": round(file_mb, 2), "save_sec": round(saved_sec, 2)}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(tree: Path, devices: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--devices", str(devices)],
                         env=env, capture_output=True, text=True, cwd=str(tree), check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default=BASE)
    p.add_argument("--devices", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.devices)
        return 0
    base = Path(tempfile.mkdtemp(prefix="nwd-rssbench-base-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base], check=True,
                   capture_output=True)
    try:
        for r in range(args.rounds):  # alternating, so a machine slowing down hits both alike
            old, new = run(base, args.devices), run(REPO, args.devices)
            print(f"round {r + 1}: {args.devices} fully loaded devices")
            for key in ("rss_growth_mb", "peak_rss_mb", "inventory_mb", "save_sec"):
                ratio = new[key] / old[key] if old[key] else float("nan")
                print(f"  {key:14s} before {old[key]:9.2f}   after {new[key]:9.2f}   after/before {ratio:.3f}")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False,
                       capture_output=True)
        shutil.rmtree(base.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
