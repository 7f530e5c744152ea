"""The senders of bench/device_bench.py: one sendmmsg process per device, measured per phase in
CPU seconds (theirs and the softirq threads'), started and stopped by pid."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]


from connect_bench import progress  # noqa: E402
from tests.support.processes import StartedUntilExit  # noqa: E402

SINK_PORT = 40009


from device_link import sh, Link  # noqa: E402


# -- the senders ------------------------------------------------------------------------------
def build_sender(workdir: str) -> Tuple[List[str], str]:
    """udp_flood.c compiled with the system's cc; the Python fallback when there is none."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        binary = os.path.join(workdir, "udp_flood")
        sh(cc, "-O2", "-Wall", "-o", binary, str(BENCH / "udp_flood.c"))
        return [binary], "C, sendmmsg in batches of 64"
    progress("no C compiler: Python senders (socket.send; a far lower packet rate)")
    return [sys.executable, str(BENCH / "udp_flood.py")], "Python socket.send (no C compiler found)"


@dataclass
class Phase:
    name: str
    sent: Dict[str, int]  # device label -> datagrams sent
    errors: int
    sec: float
    processes: int = 0
    cpu_sec: float = 0.0  # run time of the sender processes (softirq work done in their context included)
    ksoftirqd_sec: float = 0.0  # softirq work deferred to ksoftirqd (anyone's) meanwhile
    monitor_cpu_sec: float = 0.0  # the watching process(es): netwatchd, the reference's consumer
    path: str = ""  # bridge | direct
    daemon_cpu_sec: float = 0.0
    foreign: Optional[Dict[str, List[int]]] = None  # programs others attached to our ports

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    @property
    def rate(self) -> float:
        return self.total / self.sec if self.sec > 0 else 0.0

    @property
    def rate_per_cpu(self) -> float:
        """Packets per CPU-second of senders, ksoftirqd and monitor together: the rate reached
        per core, however many cores the other users of the machine leave us."""
        cpu = self.cpu_sec + self.ksoftirqd_sec + self.monitor_cpu_sec
        return self.total / cpu if cpu > 0 else 0.0

    def as_dict(self) -> Dict:
        return {"name": self.name, "sent": self.sent, "total": self.total, "errors": self.errors, "sec": self.sec,
                "processes": self.processes, "path": self.path, "packets_per_sec": self.rate,
                "cpu_sec": self.cpu_sec, "ksoftirqd_sec": self.ksoftirqd_sec,
                "monitor_cpu_sec": self.monitor_cpu_sec, "packets_per_cpu_sec": self.rate_per_cpu, "daemon_cpu_sec": self.daemon_cpu_sec,
                "foreign_programs": self.foreign or {}}


def run_time_sec(pid: int) -> float:
    """CPU time a task has run, ns resolution (/proc/PID/schedstat). Without IRQ time accounting
    (this kernel: CONFIG_IRQ_TIME_ACCOUNTING off) it includes the softirq work done while the task
    was on the CPU: for a sender on a veth, the whole receive path of its frames."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        return 0.0


def process_run_time_sec(pid: int) -> float:
    """run_time_sec of every thread of a process."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    total = 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
        except OSError:
            continue
    return total


def ksoftirqd_pids() -> List[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        out.append(int(name))
            except OSError:
                continue
    return out


class Senders(StartedUntilExit):
    """Sender processes in the device namespaces (one per bridged device, `direct_procs` in the
    direct one) and the sink, each started and stopped by pid."""

    def __init__(self, command: List[str], link: Link, direct_procs: int) -> None:
        self.command, self.link, self.direct_procs = command, link, direct_procs
        self.procs: List[Tuple[str, subprocess.Popen]] = []  # (device label, process)
        self.sink: Optional[subprocess.Popen] = None

    def _spawn(self, netns: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", netns, *self.command, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)

    def start(self) -> "Senders":
        self.sink = self._spawn(self.link.sink.netns, "sink", str(SINK_PORT))
        if self.sink.stdout.readline().strip() != "ready":
            raise RuntimeError(f"sink did not start (exit {self.sink.wait()})")
        for d in self.link.senders:
            for _ in range(1 if d.bridged else self.direct_procs):
                p = self._spawn(d.netns, "send", d.dst_ip, str(SINK_PORT))
                self.procs.append((d.label, p))
                if not p.stdout.readline():
                    raise RuntimeError(f"sender of device {d.label} did not start (exit {p.wait()})")
        return self

    def run(self, name: str, mode: str, arg: int, labels: Optional[List[str]] = None,
            monitors: Sequence[int] = ()) -> Phase:
        """The senders of `labels` (default: all) at once: `n COUNT` datagrams each, or `t MSEC`
        of sending each. The CPU time of `monitors` (processes watching the traffic) is read too."""
        chosen = [(label, p) for label, p in self.procs if labels is None or label in labels]
        soft = ksoftirqd_pids()
        cpu0, soft0 = sum(run_time_sec(p.pid) for _, p in chosen), sum(run_time_sec(pid) for pid in soft)
        mon0 = sum(process_run_time_sec(pid) for pid in monitors)
        for _, p in chosen:
            p.stdin.write(f"{mode} {arg}\n")
            p.stdin.flush()
        replies = []
        for label, p in chosen:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"sender of device {label} ended (exit {p.wait()})")
            replies.append((label, json.loads(line)))
        cpu = sum(run_time_sec(p.pid) for _, p in chosen) - cpu0
        softirq = sum(run_time_sec(pid) for pid in soft) - soft0
        monitor = sum(process_run_time_sec(pid) for pid in monitors) - mon0
        sent: Dict[str, int] = {}
        for label, reply in replies:
            sent[label] = sent.get(label, 0) + reply["sent"]
        t0 = min(reply["t0"] for _, reply in replies)
        t1 = max(reply["t1"] for _, reply in replies)
        return Phase(name, sent, sum(reply["errors"] for _, reply in replies), t1 - t0, processes=len(chosen),
                     cpu_sec=cpu, ksoftirqd_sec=softirq, monitor_cpu_sec=monitor)

    def stop(self) -> None:
        for p in [p for _, p in self.procs] + ([self.sink] if self.sink else []):
            if p.poll() is None:
                try:
                    p.stdin.close()  # the senders and the sink leave on EOF
                except OSError:
                    pass
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout:
                p.stdout.close()
        self.procs, self.sink = [], None
