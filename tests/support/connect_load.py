"""Connect floods over many flows, for the busy-host test and the flows benchmarks: worker
processes (copies of the interpreter, so their pids are theirs alone) connect in a loop to
addresses in 127.77.0.0/16 and 127.78.0.0/16 at one port the caller holds bound on 127.0.0.1 and
never listens on: every connect is refused at once by the loopback (nobody else can listen on
that port on a wildcard address), and each (worker, address) is a flow of its own. Traffic:
127.0.0.0/8 only. Every worker is ended by pid, even when the caller fails.
"""
from __future__ import annotations

import subprocess
import sys
import time
from typing import Dict, List, Tuple

# argv: port, first flow, flows, connects, tail. Prints its pid, waits for a line on stdin (the
# start), then prints "done <refused>" and the addresses of its last `tail` connects.
WORKER = r"""
import os, socket, sys
port, first, flows, n, tail = map(int, sys.argv[1:6])
print(os.getpid(), flush=True)
sys.stdin.readline()
addrs = [("127.%d.%d.%d" % (77 + (k >> 16), (k >> 8) & 255, k & 255), port) for k in range(first, first + flows)]
refused = 0
for i in range(n):
    s = socket.socket()
    if s.connect_ex(addrs[i % flows]) == 111:
        refused += 1
    s.close()
print("done", refused, " ".join(addrs[i % flows][0] for i in range(max(0, n - tail), n)), flush=True)
"""


class Workers:
    """Workers started together, each (first flow, flows, connects); `run` starts them at once
    and returns {pid: {"refused", "last"}} once all are done."""

    def __init__(self, port: int, plan: List[Tuple[int, int, int]], tail: int = 0):
        self.procs = []
        try:
            for first, flows, n in plan:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(port), str(first), str(flows), str(n), str(tail)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            self.pids = [int(p.stdout.readline()) for p in self.procs]
        except BaseException:
            self.close()
            raise

    def run(self, timeout: float = 120) -> Dict[int, Dict]:
        for p in self.procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        out = {}
        deadline = time.monotonic() + timeout
        for pid, p in zip(self.pids, self.procs):
            line = p.stdout.readline().split()
            assert line and line[0] == "done", f"worker {pid} ended without its tally"
            out[pid] = {"refused": int(line[1]), "last": line[2:]}
            assert time.monotonic() < deadline, "workers too slow"
        return out

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdin.close()
            p.stdout.close()

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def refused_connects(port: int, workers: int, flows: int, connects: int) -> Dict[int, int]:
    """`connects` refused connects split over `workers` workers, `flows` flows split likewise:
    {pid: connects refused}."""
    per_flows, per_connects = flows // workers, connects // workers
    with Workers(port, [(w * per_flows + 1, per_flows, per_connects) for w in range(workers)]) as w:
        return {pid: r["refused"] for pid, r in w.run(timeout=3600).items()}
