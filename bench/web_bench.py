"""Issue 26's figures: the web UI against a real daemon (the shipped config plus web.enabled,
web.listen on a free loopback port, devices.interfaces = a veth pair the bench makes,
alerts.max_alerts 10000, and alerts.state_save_interval_sec 3600: saving 10000 alerts takes tens
of ms every 5 s, which would land unevenly in the CPU windows of 3.), whose state directory is
filled before it starts with an inventory of --devices devices (real OUIs: Cisco, Intel,
Raspberry Pi, VMware, Apple, Google, and 5 % randomized MACs; IPv4s, host names, counters, names,
peers) and an alert log of --alerts alerts (alerts.json); GET /api/overview must report both before anything is measured. One run, side by
side:

1. time to first data: headless Chromium (tests/support/browser.py) loads /, /devices and
   /alerts --loads times each, cold (browser cache cleared first) and warm (cached, ETags): the
   time from navigation start to app.js's first render, read with performance.now() at the first
   increment of window.netwatchd.renders (a setter injected before the page's scripts through
   CDP Page.addScriptToEvaluateOnNewDocument: nothing in netwatchd/ changes); median and max.
   And the server's time for GET /api/overview, /api/devices (first page of 100, as the page
   asks), /api/alerts (newest 100) and /api/devices/<mac> from a plain keep-alive http.client with gzip, median and
   p90 of --requests, interleaved;
2. bytes per page load, for /, /devices, /devices/<mac>, /alerts, /alerts/<id>, /processes: the
   sum of transferSize over the navigation and resource timing entries (headers and the
   compressed body; the live feed /api/events never finishes, so it is not in it), cold and on
   a warm reload (the static files come back as 304s), and the biggest file of the cold load;
3. daemon CPU per live client per tick: K = 0, 10, 50 clients in a child process, each holding
   GET /api/events open and reading every event as a page does: variant A "overview/devices"
   (events only; the real pages also refetch their data every 10 s, priced from 1.), variant B
   "device pages" (also GET /api/devices/<mac>, a different device each, when 2 s have passed
   at a tick, as app.js's device view does). The daemon's CPU seconds (to the ns from
   /proc/<pid>/task/*/sched; utime+stime of /proc/<pid>/stat beside it) over --window/--tick
   whole ticks, from the end of a tick (its STATUS= sd_notify line) to the end of the n-th
   after it, over n; --rounds rounds, the configurations interleaved, medians. At the shipped
   tick of 1 s. Per client per tick = (CPU(K) - CPU(0)) / K, and the marginal one from 10 to 50;
4. tick time with 50 open pages vs none: the daemon's own measure of its ticks (the read model's
   tick_time: time.perf_counter() around each; /api/overview's "tick"), mean over the window, as
   a ratio K=50 over K=0. Beside it, the tick's period as systemd sees it, the spacing of
   consecutive STATUS= lines minus tick_interval_sec: the tick's work plus any lateness of the
   event loop (what answering the pages between ticks costs it), and the CPU per tick ratio.

    make bench-web     (root; ~3 min)
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Tuple

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from bench_main import bench_daemon, run_benchmark  # noqa: E402
from connect_bench import cpu_sec  # noqa: E402
from netwatchd.alerting.alerts import Alert  # noqa: E402
from netwatchd.devices.model import Device  # noqa: E402
from netwatchd.devices.vendors import VendorDb  # noqa: E402
from netwatchd.store.inventory import InventoryStore  # noqa: E402
from netwatchd.store.state_files import AlertStateFiles  # noqa: E402
from tests.support import wait_for  # noqa: E402
from tests.support.alertmanager import free_port  # noqa: E402
from tests.support.browser import Browser  # noqa: E402
from tests.support.daemon import PrivateSystemBus  # noqa: E402

OUIS = ("00:00:0c", "00:1b:21", "b8:27:eb", "00:50:56", "f0:18:98", "3c:5a:b4")
PAGES = ("/", "/devices", "/alerts")  # timed to first data
# the first render: a setter on window.netwatchd.renders, defined before app.js runs
FIRST_RENDER_HOOK = """(() => { let v; Object.defineProperty(window, 'netwatchd', { configurable: true,
  get() { return v; },
  set(o) { v = o; let r = o.renders; Object.defineProperty(o, 'renders', { configurable: true, enumerable: true,
    get() { return r; },
    set(x) { if (x > 0 && window.__firstRenderMs === undefined) window.__firstRenderMs = performance.now(); r = x; } }); } });
})();"""
ENTRIES = ("return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
           ".map(e => [e.name, e.transferSize, e.encodedBodySize, e.decodedBodySize])")
CONFIGS = (("none", 0), ("A", 10), ("A", 50), ("B", 10), ("B", 50))


def cpu_exact(pid: int) -> float:
    """On-CPU seconds of every thread of a process, to the nanosecond (se.sum_exec_runtime, ms,
    of /proc/<pid>/task/*/sched): /proc/<pid>/stat's utime+stime come in 10 ms clock ticks, too
    coarse for a few ms per tick over a 10 s window."""
    total = 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{task}/sched").read_text()
        except OSError:
            continue
        total += next((float(line.split(":")[1]) for line in text.splitlines()
                       if line.startswith("se.sum_exec_runtime")), 0.0)
    return total / 1000



@contextmanager
def veth(name: str):
    """A veth pair, both ends up; `name` is the one the daemon watches. Deleted on the way out."""
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
    try:
        for end in (name, name + "p"):
            subprocess.run(["ip", "link", "set", end, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


# -- 1000 devices and 10000 alerts, before the daemon starts --------------------------------------
def prepare_state(state: Path, n_devices: int, n_alerts: int, interface: str) -> Tuple[List[str], List[str], int]:
    """The inventory and the alert log; returns (MACs, alert ids oldest first, vendors resolved)."""
    rng = random.Random(26)
    vendors = VendorDb.load()
    now = time.time_ns() // 1000
    devices = []
    for i in range(n_devices):
        if i % 20 == 19:  # a randomized MAC: locally administered, no vendor
            mac = "da:%02x:%02x:%02x:%02x:%02x" % tuple(rng.randrange(256) for _ in range(5))
        else:
            mac = OUIS[i % len(OUIS)] + ":%02x:%02x:%02x" % (i >> 8 & 255, i & 255, rng.randrange(256))
        first = now - rng.randrange(20 * 86400) * 1_000_000
        last = now - rng.randrange(3600) * 1_000_000
        sent, received = rng.randrange(10**9), rng.randrange(10**10)
        devices.append(Device(
            mac=mac, vendor=vendors.lookup(mac), randomized=i % 20 == 19, first_seen_usec=first, last_seen_usec=last,
            interface=interface, hostname=f"host-{i:04d}", hostname_source="dhcp",
            ipv4={f"10.26.{i >> 8}.{i & 255}": last}, ipv6={f"fd26::{i:x}": last} if i % 3 == 0 else {},
            counters={"tx_ipv4_bytes": sent, "rx_ipv4_bytes": received, "tx_ipv4_packets": sent // 900,
                      "rx_ipv4_packets": received // 1200, "tx_tcp_packets": sent // 1000, "tcp_syns": sent // 50000},
            dns_names={f"svc{j}.example.net": rng.randrange(1, 99) for j in range(6)},
            tls_names={f"api{j}.example.com": 1 for j in range(3)},
            peers=rng.randrange(10, 500), confirmed=True,
            recent_peers=[{"address": f"198.51.100.{j}", "port": 443, "transport": "tcp", "name": f"api{j}.example.com"}
                          for j in range(8)]))
    with InventoryStore.open(str(state / "inventory.sqlite3")) as store:
        store.save_devices(devices)
    macs = [d.mac for d in devices]
    prefix = f"{(now // 1_000_000) - 8 * 86400:x}"
    alerts = []
    for n in range(n_alerts):
        mac = macs[n % len(macs)]
        t = now - (n_alerts - n) * 60_000_000  # one a minute, oldest first
        kind = ("new_device", "connect_rate", "fan_out", "address_change")[n % 4]
        subject = f"command:cmd{n % 50}" if kind == "connect_rate" else f"device:{mac}"
        alerts.append(Alert(f"{prefix}-{n + 1}", kind, subject, t, f"{kind} on {subject}", 40.0 + n % 7, 3.0,
                            9.5, {"mac": mac, "interface": interface} if subject.startswith("device:") else
                            {"command": subject[8:]}).to_dict())
    AlertStateFiles(str(state)).save({}, alerts)
    return macs, [a["id"] for a in alerts], sum(1 for d in devices if d.vendor)


def get(conn: http.client.HTTPConnection, path: str) -> Tuple[float, int, bytes]:
    t0 = time.perf_counter()
    conn.request("GET", path, headers={"Accept-Encoding": "gzip", "Accept": "application/json"})
    r = conn.getresponse()
    body = r.read()
    ms = (time.perf_counter() - t0) * 1000
    if r.status != 200:
        raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
    return ms, len(body), body


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def overview(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/overview")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def api_times(port: int, n: int, mac: str) -> Dict[str, Dict]:
    paths = {"/api/overview": "/api/overview",
             "/api/devices": "/api/devices?sort=first_seen&order=asc&q=&offset=0&limit=100",
             "/api/alerts": "/api/alerts?kind=&subject=&offset=0&limit=100",
             "/api/devices/<mac>": f"/api/devices/{mac}"}  # what variant B's clients ask
    samples: Dict[str, List[float]] = {k: [] for k in paths}
    size = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(n):
            for name, path in paths.items():
                ms, size[name], _ = get(conn, path)
                samples[name].append(ms)
    finally:
        conn.close()
    return {name: {"median_ms": statistics.median(s), "p90_ms": sorted(s)[int(0.9 * (len(s) - 1))],
                   "gzip_bytes": size[name]} for name, s in samples.items()}


# -- in Chromium ------------------------------------------------------------------------------------
def first_render_ms(b: Browser, url: str, cold: bool) -> float:
    if cold:
        b.driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    b.open(url)
    ms = b.wait_js("window.__firstRenderMs", timeout=30, what=f"the first render of {url}")
    errors = b.driver.execute_script("return window.netwatchd.errors")
    if errors:
        raise RuntimeError(f"{url}: the page showed an error: {errors}")
    return float(ms)


def page_bytes(b: Browser, url: str, cold: bool) -> Dict:
    if cold:
        b.driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    b.open(url)
    b.wait_js("window.__firstRenderMs", timeout=30, what=f"the first render of {url}")
    time.sleep(0.3)  # the charts' and the page's last requests finish
    files: Dict[str, List[int]] = {}
    for name, transfer, encoded, decoded in b.driver.execute_script(ENTRIES):
        key = "/" + name.split("/", 3)[3].split("?")[0]
        f = files.setdefault(key, [0, 0, 0, 0])  # transferred, encoded, decoded bytes; requests
        f[0], f[1], f[2], f[3] = f[0] + transfer, f[1] + encoded, f[2] + decoded, f[3] + 1
    biggest = max(files, key=lambda k: files[k][0])
    return {"bytes": sum(f[0] for f in files.values()), "files": files, "biggest": biggest}


def in_browser(base: str, mac: str, alert_id: str, args, tmp: Path) -> Dict:
    with Browser(tmp, timeout=30) as b:
        b.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FIRST_RENDER_HOOK})
        b.open(base + "/devices")  # the browser's own first-start costs, out of the figures
        b.wait_js("window.__firstRenderMs", timeout=30)
        timing = {}
        for page in PAGES:
            cold, warm = [], []
            for _ in range(args.loads):  # interleaved: cold then warm, the same moment's machine
                cold.append(first_render_ms(b, base + page, True))
                warm.append(first_render_ms(b, base + page, False))
            timing[page] = {k: {"median_ms": statistics.median(v), "max_ms": max(v), "samples": v}
                            for k, v in (("cold", cold), ("warm", warm))}
        sizes = {}
        for page in ("/", "/devices", f"/devices/{mac}", "/alerts", f"/alerts/{alert_id}", "/processes"):
            sizes[page] = {"cold": page_bytes(b, base + page, True), "warm": page_bytes(b, base + page, False)}
    return {"first_data": timing, "bytes": sizes}


# -- live clients, in a child process (their CPU is not the bench's observer's) ---------------------
async def _page(session, base: str, mac: str, variant: str, counts: Dict) -> None:
    import aiohttp

    at = 0.0
    async with session.get(base + "/api/events", timeout=aiohttp.ClientTimeout(total=None)) as r:
        if r.status != 200:
            counts["refused"] += 1
            return
        buf = b""
        async for chunk in r.content.iter_any():
            buf += chunk
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                if not block.startswith(b"event: tick"):
                    continue
                counts["events"] += 1
                counts["open"].add(mac)
                if variant == "B" and time.monotonic() - at >= 2.0:
                    at = time.monotonic()
                    async with session.get(f"{base}/api/devices/{mac}") as d:
                        await d.read()
                        counts["gets"] += d.status == 200


async def _clients(base: str, k: int, variant: str, macs: List[str], ready, stop) -> Dict:
    import aiohttp

    counts = {"events": 0, "gets": 0, "refused": 0, "open": set()}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(_page(session, base, macs[i], variant, counts)) for i in range(k)]
        while len(counts["open"]) < k and not stop.is_set():
            await asyncio.sleep(0.05)
        ready.set()
        counts["events_at_ready"], counts["gets_at_ready"] = counts["events"], counts["gets"]
        while not stop.is_set():
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    counts["open"] = len(counts["open"])
    return counts


def clients_main(base, k, variant, macs, ready, stop, out) -> None:
    out.put(asyncio.run(_clients(base, k, variant, macs, ready, stop)))


def status_times(d, since: int) -> List[float]:
    return [t for m, t in zip(list(d.notify.messages)[since:], list(d.notify.times)[since:]) if "STATUS=" in m]


def at_status(d, since: int, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(status_times(d, since)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} ticks in 60 s")
        time.sleep(0.001)


def window(d, base: str, macs: List[str], variant: str, k: int, args) -> Dict:
    ctx = multiprocessing.get_context("spawn")
    proc = None
    if k:
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=clients_main, args=(base, k, variant, macs[:k], ready, stop, out), daemon=True)
        proc.start()
    try:
        if proc is not None and not ready.wait(30):
            raise RuntimeError(f"{k} live clients did not all get a first event in 30 s")
        time.sleep(1.0)
        since, n = len(d.notify.messages), max(2, round(args.window / args.tick))
        at_status(d, since, 1)  # from the end of a tick to the end of the n-th after it
        c0, e0, t0 = cpu_sec(d.pid), cpu_exact(d.pid), time.monotonic()
        tick0 = overview(port_of(base))["tick"]
        at_status(d, since, n + 1)
        c1, e1, t1 = cpu_sec(d.pid), cpu_exact(d.pid), time.monotonic()
        tick1 = overview(port_of(base))["tick"]
        times = status_times(d, since)[:n + 1]
        counts = {}
        if proc is not None:
            stop.set()
            counts = out.get(timeout=30)
    finally:
        if proc is not None:
            stop.set()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    gaps = [(b - a) * 1000 - args.tick * 1000 for a, b in zip(times, times[1:])]
    ticks = len(times) - 1
    return {"variant": variant, "clients": k, "sec": t1 - t0, "cpu_sec": e1 - e0, "stat_cpu_sec": c1 - c0,
            "ticks": ticks, "cpu_ms_per_tick": (e1 - e0) * 1000 / ticks,
            "stat_cpu_ms_per_tick": (c1 - c0) * 1000 / ticks,
            "excess_median_ms": statistics.median(gaps), "excess_mean_ms": statistics.fmean(gaps),
            # the daemon's own measure of its ticks (the read model's tick_time), over the window
            "tick_ms": (tick1["total_sec"] - tick0["total_sec"]) * 1000 / max(1, tick1["ticks"] - tick0["ticks"]),
            "client_events": counts.get("events", 0) - counts.get("events_at_ready", 0),
            "device_gets": counts.get("gets", 0) - counts.get("gets_at_ready", 0), "refused": counts.get("refused", 0)}


def live(d, base: str, macs: List[str], args) -> Dict:
    windows = []
    for _ in range(args.rounds):
        for variant, k in CONFIGS:
            windows.append(window(d, base, macs, variant, k, args))
            time.sleep(1.0)  # the closed streams leave the hub at their next write
    out = {}
    for variant, k in CONFIGS:
        mine = [w for w in windows if (w["variant"], w["clients"]) == (variant, k)]
        out[f"{variant}{k}"] = dict({key: statistics.median(w[key] for w in mine)
                                     for key in ("cpu_ms_per_tick", "stat_cpu_ms_per_tick", "tick_ms", "excess_median_ms",
                                                 "excess_mean_ms", "ticks", "client_events", "device_gets")}, clients=k)
    base0 = out["none0"]
    for m in out.values():
        if m["clients"]:
            m["per_client_per_tick_us"] = (m["cpu_ms_per_tick"] - base0["cpu_ms_per_tick"]) / m["clients"] * 1000
    for v in ("A", "B"):  # one more page, once some are open: the event is built once a tick for all
        out[f"{v}50"]["marginal_10_to_50_us"] = (out[f"{v}50"]["cpu_ms_per_tick"] - out[f"{v}10"]["cpu_ms_per_tick"]) / 40 * 1000
    return {"configs": out, "windows": windows}


# -- the run -----------------------------------------------------------------------------------------
def run(args) -> Dict:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nwd-web-bench-") as tmp, veth(f"nwwb{random.randrange(10**5)}") as ifname:
        state = Path(tmp) / "state"
        state.mkdir()
        macs, alert_ids, resolved = prepare_state(state, args.devices, args.alerts, ifname)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = {"state_directory": str(state), "tick_interval_sec": args.tick, "devices": {"interfaces": [ifname]},
                  "alerts": {"max_alerts": args.alerts, "state_save_interval_sec": args.save_interval},
                  "web": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
        with PrivateSystemBus() as bus, bench_daemon(bus, config) as d:
            o = wait_for(lambda: (lambda o: o["devices"]["total"] == args.devices and o["alerts"]["total"] == args.alerts
                                  and o)(overview(port)), timeout=30, what="the prepared devices and alerts",
                         detail=lambda: str(overview(port)["devices"]) + str(overview(port)["alerts"]["total"]))
            startup = time.monotonic() - started
            api = api_times(port, args.requests, macs[0])
            browser = in_browser(base, macs[0], alert_ids[-1], args, Path(tmp) / "artifacts")
            clients = live(d, base, macs, args)
    return {"devices": o["devices"]["total"], "alerts": o["alerts"]["total"], "vendors_resolved": resolved,
            "tick_sec": args.tick, "startup_sec": startup, "api": api, **browser, "live": clients,
            "run_sec": time.monotonic() - started}


def report(r: Dict) -> str:
    kib = lambda n: f"{n / 1024:.1f} KiB"  # noqa: E731
    lines = [f"state: {r['devices']} devices ({r['vendors_resolved']} with a vendor), {r['alerts']} alerts; "
             f"tick {r['tick_sec']} s; daemon up and checked after {r['startup_sec']:.0f} s; run {r['run_sec']:.0f} s", "",
             "1. time to first data (navigation start -> first render with data), ms",
             f"   {'page':<10} {'cold med':>9} {'cold max':>9} {'warm med':>9} {'warm max':>9}"]
    for page, t in r["first_data"].items():
        lines.append(f"   {page:<10} {t['cold']['median_ms']:9.0f} {t['cold']['max_ms']:9.0f} "
                     f"{t['warm']['median_ms']:9.0f} {t['warm']['max_ms']:9.0f}")
    lines.append("   server side, keep-alive client with gzip:")
    for path, a in r["api"].items():
        lines.append(f"   {path:<18} median {a['median_ms']:6.1f} ms  p90 {a['p90_ms']:6.1f} ms  {kib(a['gzip_bytes'])} gzipped")
    lines += ["", "2. bytes per page load (transferSize: headers + compressed bodies; /api/events not included)",
              f"   {'page':<34} {'cold':>10} {'warm':>10}  biggest on a cold load"]
    for page, s in r["bytes"].items():
        big = s["cold"]["biggest"]
        twice = ", ".join(f"{f} x{v[3]}" for f, v in s["cold"]["files"].items() if v[3] > 1)
        lines.append(f"   {page:<34} {kib(s['cold']['bytes']):>10} {kib(s['warm']['bytes']):>10}  {big} "
                     f"{kib(s['cold']['files'][big][0])} ({kib(s['cold']['files'][big][2])} raw)"
                     + (f"; fetched more than once: {twice}" if twice else ""))
    lines += ["", f"3./4. live clients, daemon CPU per tick and tick period - {r['tick_sec']} s (medians)",
              f"   {'clients':<8} {'CPU/tick':>9} {'(stat)':>6} {'per client/tick':>16} {'10->50':>8} "
              f"{'tick time':>10} {'excess med':>11} {'excess mean':>12} {'ticks':>6}"]
    c = r["live"]["configs"]
    for name, m in c.items():
        per = f"{m['per_client_per_tick_us']:.0f} us" if "per_client_per_tick_us" in m else "-"
        marginal = f"{m['marginal_10_to_50_us']:.0f} us" if "marginal_10_to_50_us" in m else ""
        lines.append(f"   {name:<8} {m['cpu_ms_per_tick']:6.2f} ms {m['stat_cpu_ms_per_tick']:6.1f} {per:>16} {marginal:>8} "
                     f"{m['tick_ms']:7.2f} ms {m['excess_median_ms']:8.2f} ms {m['excess_mean_ms']:9.2f} ms {m['ticks']:6.0f}")
    summary = {"first_data_ms": {p: t["cold"]["median_ms"] for p, t in r["first_data"].items()},
               "api_ms": {p: a["median_ms"] for p, a in r["api"].items()},
               "bytes": {p: [s["cold"]["bytes"], s["warm"]["bytes"]] for p, s in r["bytes"].items()},
               "cpu_ms_per_tick": {n: round(m["cpu_ms_per_tick"], 3) for n, m in c.items()},
               "per_client_per_tick_us": {n: round(m["per_client_per_tick_us"], 1) for n, m in c.items() if n != "none0"},
               "marginal_10_to_50_us": {v: round(c[f"{v}50"]["marginal_10_to_50_us"], 1) for v in "AB"}}
    for v in ("A", "B"):
        excess = c[f"{v}50"]["excess_median_ms"] / c["none0"]["excess_median_ms"] if c["none0"]["excess_median_ms"] > 0 else 0
        cpu = c[f"{v}50"]["cpu_ms_per_tick"] / c["none0"]["cpu_ms_per_tick"] if c["none0"]["cpu_ms_per_tick"] else 0
        tick = c[f"{v}50"]["tick_ms"] / c["none0"]["tick_ms"] if c["none0"]["tick_ms"] > 0 else 0
        summary[f"ratio_50_vs_0_{v}"] = {"tick_time": round(tick, 3), "tick_period_excess": round(excess, 3),
                                         "cpu_per_tick": round(cpu, 3)}
        lines.append(f"   50 pages vs none, variant {v}: tick time {tick:.2f}x (issue: <= 1.1x); tick work+lag "
                     f"(period - interval, median) {excess:.2f}x; CPU per tick {cpu:.2f}x")
    lines += ["", "JSON " + json.dumps(summary, separators=(",", ":"))]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=1000, help="devices in the inventory (default 1000)")
    p.add_argument("--alerts", type=int, default=10000, help="alerts in the log, alerts.max_alerts too (default 10000)")
    p.add_argument("--loads", type=int, default=7, help="loads per page, cold and warm each (default 7)")
    p.add_argument("--requests", type=int, default=50, help="requests per API path (default 50)")
    p.add_argument("--tick", type=float, default=1.0, help="tick_interval_sec (default 1.0: the shipped one)")
    p.add_argument("--window", type=float, default=10.0, help="seconds of CPU per configuration and round (default 10)")
    p.add_argument("--save-interval", type=float, default=3600.0,
                   help="alerts.state_save_interval_sec (default 3600, shipped 5: the saves of 10000 alerts, "
                        "tens of ms each, would land unevenly in the windows)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the live configurations (default 2)")
    p.add_argument("--results-dir", default=str(BENCH / "results"))
    return run_benchmark("web_bench", "BPF, a private bus, a veth pair", p.parse_args(), run, report)


if __name__ == "__main__":
    sys.exit(main())
