"""ebpf-server's API (issue 13): request latency of its routes against GET /health, side by side in
one run, on one daemon.

    .venv/bin/python bench/ebpf_api_bench.py            (make bench-api; as root; ~30 s)
    .venv/bin/python bench/ebpf_api_bench.py --quick    (smoke check)

A daemon with the shipped config (ebpf_server_api on, a free loopback port) watches `--processes`
children make `--connects` loopback TCP connects each, so the listing has that many processes
with records. Then the client sends `--requests` rounds of GET /health, POST
/api/connection-summary (the first child's pid), GET /api/list-connections (default limit, every
process) and the same for one pid, interleaved so all share the machine's conditions, each over
a new connection as the server closes every one. The figures: median and p90 per route, and each
route's median over /health's (what the engine's query costs above the HTTP round trip).
Everything started here is stopped by pid, on error and on Ctrl-C too. Traffic: 127.0.0.1.
"""
from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

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


def request(port: int, method: str, path: str, body: bytes = b"") -> float:
    """Seconds from connect to the whole answer read; the status must be 200."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body or None, headers={"Content-Type": "application/json"} if body else {})
    reply = conn.getresponse()
    data = reply.read()
    elapsed = time.perf_counter() - start
    conn.close()
    if reply.status != 200:
        raise RuntimeError(f"{method} {path}: {reply.status} {data[:200]!r}")
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
    port = free_port()
    config["ebpf_server_api"].update(enabled=True, listen=f"127.0.0.1:{port}")
    children: List[subprocess.Popen] = []
    acceptor = Acceptor()
    try:
        with PrivateSystemBus() as bus, bench_daemon(bus, config):
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
            for method, path, body in routes.values():  # warm-up
                request(port, method, path, body)
            times: Dict[str, List[float]] = {name: [] for name in routes}
            for _ in range(args.requests):
                for name, (method, path, body) in routes.items():
                    times[name].append(request(port, method, path, body))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/api/list-connections")
            listed = json.loads(conn.getresponse().read())
            conn.close()
    finally:
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


def report(r: Dict) -> str:
    times = r["times_sec"]
    health = statistics.median(times["GET /health"])
    lines = [f"ebpf-server API latency: {r['requests']} rounds, {r['processes']} processes x {r['connects']} connects "
             f"(listing: {r['total_pids']} processes, {r['listed']} connections)",
             f"  {'route':34} {'median ms':>10} {'p90 ms':>8} {'x /health':>10}"]
    for name, values in times.items():
        median = statistics.median(values)
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        lines.append(f"  {name:34} {median * 1e3:10.3f} {p90 * 1e3:8.3f} {median / health:10.2f}")
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
