"""ebpf-server's API (issue 13): request latency of its routes, on the HTTP edge (aiohttp,
netwatchd/api/http_edge.py) and on the hand-written server it replaced (bench/legacy_http.py),
side by side in one run, on one daemon.

    .venv/bin/python bench/ebpf_api_bench.py            (make bench-api; as root; ~1 min)
    .venv/bin/python bench/ebpf_api_bench.py --quick    (smoke check)

A daemon with the shipped config (ebpf_server_api on, a free loopback port) watches `--processes`
children make `--connects` loopback TCP connects each, so the listing has that many processes
with records. The daemon runs through bench/legacy_http.py, which serves the same routes a second
time with the old server on another port. Then the client sends `--requests` rounds of GET
/health, POST /api/connection-summary (the first child's pid), GET /api/list-connections
(default limit, every process) and the same for one pid, to the old server and the new, each
over a new connection as both close every one unless asked, and to the new one over a kept-alive
connection (`Connection: keep-alive`: no connect in its time), interleaved so all share the
machine's conditions. The figures: p50 and p99 per route and server, new over old. Everything
started here is stopped by pid, on error and on Ctrl-C too. Traffic: 127.0.0.1.
"""
from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from bench_main import bench_daemon, run_benchmark  # noqa: E402
from tests.support.daemon import DaemonProcess, PrivateSystemBus  # noqa: E402

RESULTS = BENCH / "results"
CHILD = r"""
import os, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    s = socket.socket()
    s.connect(("127.0.0.1", port))
    s.close()
print("done", flush=True)
sys.stdin.read()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes = b"", conn: Optional[http.client.HTTPConnection] = None) -> float:
    """Seconds from connect (or, on a kept-alive `conn`, from sending) to the whole answer read;
    the status must be 200."""
    start = time.perf_counter()
    kept = conn is not None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"} if body else {}
    if kept:
        headers["Connection"] = "keep-alive"
    conn.request(method, path, body=body or None, headers=headers)
    reply = conn.getresponse()
    data = reply.read()
    elapsed = time.perf_counter() - start
    if not kept:
        conn.close()
    if reply.status != 200:
        raise RuntimeError(f"{method} {path}: {reply.status} {data[:200]!r}")
    if kept and reply.will_close:
        raise RuntimeError(f"{method} {path}: the kept-alive connection was closed")
    return elapsed


class Acceptor:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                conn.close()
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def run(args) -> Dict:
    config = yaml.safe_load((REPO / "config" / "netwatchd.yaml").read_text())
    config["devices"]["enabled"] = False  # never attach to the host's interfaces
    port, legacy_port = free_port(), free_port()
    config["ebpf_server_api"].update(enabled=True, listen=f"127.0.0.1:{port}")
    children: List[subprocess.Popen] = []
    acceptor = Acceptor()
    kept: Optional[http.client.HTTPConnection] = None
    legacy = [sys.executable, str(BENCH / "legacy_http.py"), "--legacy-port", str(legacy_port)]
    try:
        with PrivateSystemBus() as bus, bench_daemon(bus, config, command_prefix=legacy):
            for _ in range(args.processes):
                child = subprocess.Popen([sys.executable, "-c", CHILD, str(acceptor.port), str(args.connects)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                children.append(child)
                if child.stdout.readline().strip() != "done":
                    raise RuntimeError("a connect child failed")
            pid = children[0].pid
            routes = {
                "GET /health": ("GET", "/health", b""),
                "POST /api/connection-summary": ("POST", "/api/connection-summary",
                                                 json.dumps({"pid": pid, "duration": 3600}).encode()),
                "GET /api/list-connections": ("GET", "/api/list-connections", b""),
                "GET /api/list-connections?pid=": ("GET", f"/api/list-connections?pid={pid}", b""),
            }
            kept = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            servers = {"old": lambda *a: request(legacy_port, *a), "new": lambda *a: request(port, *a),
                       "new kept": lambda *a: request(port, *a, conn=kept)}
            for method, path, body in routes.values():  # warm-up
                for send in servers.values():
                    send(method, path, body)
            times: Dict[str, Dict[str, List[float]]] = {server: {name: [] for name in routes} for server in servers}
            for _ in range(args.requests):
                for name, (method, path, body) in routes.items():
                    for server, send in servers.items():
                        times[server][name].append(send(method, path, body))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/api/list-connections")
            listed = json.loads(conn.getresponse().read())
            conn.close()
    finally:
        if kept is not None:
            kept.close()
        for child in children:
            if child.poll() is None:
                child.stdin.close()
                try:
                    child.wait(5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        acceptor.close()
    return {"times_sec": times, "total_pids": listed["total_pids"],
            "listed": sum(len(r) for r in listed["connections"].values()),
            "processes": args.processes, "connects": args.connects, "requests": args.requests}


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def report(r: Dict) -> str:
    times = r["times_sec"]
    lines = [f"ebpf-server API latency: {r['requests']} rounds, {r['processes']} processes x {r['connects']} connects "
             f"(listing: {r['total_pids']} processes, {r['listed']} connections); ms, new connection per request "
             "unless kept",
             f"  {'route':32} {'old p50':>8} {'old p99':>8} {'new p50':>8} {'new p99':>8} {'new/old p50':>11} "
             f"{'new/old p99':>11} {'kept p50':>9} {'kept p99':>9}"]
    for name in times["old"]:
        old, new, kept = (times[server][name] for server in ("old", "new", "new kept"))
        o50, o99, n50, n99 = (percentile(v, q) for v, q in ((old, .5), (old, .99), (new, .5), (new, .99)))
        lines.append(f"  {name:32} {o50 * 1e3:8.3f} {o99 * 1e3:8.3f} {n50 * 1e3:8.3f} {n99 * 1e3:8.3f} "
                     f"{n50 / o50:11.2f} {n99 / o99:11.2f} {percentile(kept, .5) * 1e3:9.3f} "
                     f"{percentile(kept, .99) * 1e3:9.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=50)
    p.add_argument("--connects", type=int, default=150, help="per process")
    p.add_argument("--requests", type=int, default=300, help="rounds over the routes")
    p.add_argument("--quick", action="store_true", help="5 processes x 20 connects, 30 rounds")
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.processes, args.connects, args.requests = 5, 20, 30
    return run_benchmark("ebpf_api_bench", "it starts netwatchd", args, run, report)


if __name__ == "__main__":
    sys.exit(main())
