"""The floor and reference classifiers of bench/device_floors.bpf.c, in a process of their own.

The process loads the programs and prints one JSON line: its pid and the program fds (the
benchmark turns them into program ids with bpf_stats.prog_of_fd). Then it takes commands on
stdin, one JSON line each, and answers one JSON line:

    {"attach": ["floor_count", "floor_mac", "ref_ring"], "ifindexes": [..]}
        TCX links, appended after whatever is attached: the *_in programs on ingress and the
        *_eg ones on egress of each interface (ref_ring on ingress only) -> {"links": N}
    {"detach": true}     closes every link                       -> {"links": 0}
    {"consumed": true}   reference records read so far           -> {"consumed": N}

Meanwhile it consumes the reference ring buffer as a per-packet tracing tool would (epoll, one
callback per record). Links are owned by this process's fds: they go when it goes, however it
goes, and it goes with the benchmark (PR_SET_PDEATHSIG). On SIGTERM it prints
{"consumed": N} and exits.

    python bench/device_floors.py        (started by FloorClassifiers)
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOURCE = HERE / "device_floors.bpf.c"
RING_PAGES = 64  # 256 KiB with 4 KiB pages
# set name -> (function, attach type) pairs; TCX_INGRESS = 46, TCX_EGRESS = 47
SETS = {
    "floor_count": (("floor_count_in", 46), ("floor_count_eg", 47)),
    "floor_mac": (("floor_mac_in", 46), ("floor_mac_eg", 47)),
    "ref_ring": (("ref_ring_in", 46),),
}
FUNCTIONS = [fn for pairs in SETS.values() for fn, _ in pairs]


def floors_main() -> None:
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: end with the benchmark
    if os.getppid() == 1:
        os._exit(1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    sys.path.insert(0, str(REPO))
    from bcc import BPF

    from netwatchd.kernel import links as bpf_links

    b = BPF(src_file=str(SOURCE).encode(), cflags=[f"-DREF_RING_PAGES={RING_PAGES}"])
    fds = {fn: b.load_func(fn.encode(), BPF.SCHED_CLS).fd for fn in FUNCTIONS}
    consumed = [0]

    def on_record(_ctx, _data, _size):
        consumed[0] += 1

    b[b"ref_packets"].open_ring_buffer(on_record)
    links: List[int] = []

    def answer(obj: Dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def command(cmd: Dict) -> Dict:
        if "attach" in cmd:
            for name in cmd["attach"]:
                for fn, attach_type in SETS[name]:
                    for ifindex in cmd["ifindexes"]:
                        links.append(bpf_links.link(fds[fn], ifindex, attach_type, f"{fn} on ifindex {ifindex}"))
            return {"links": len(links)}
        if "detach" in cmd:
            while links:
                os.close(links.pop())
            return {"links": 0}
        if "consumed" in cmd:
            b.ring_buffer_consume()
            return {"consumed": consumed[0]}
        return {"error": f"unknown command {cmd}"}

    answer({"pid": os.getpid(), "fds": fds})
    pending = b""
    while not stop:
        b.ring_buffer_poll(20)
        try:
            ready, _, _ = select.select([0], [], [], 0)
        except InterruptedError:
            continue
        if not ready:
            continue
        chunk = os.read(0, 4096)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            try:
                answer(command(json.loads(line)))
            except Exception as e:  # report, keep serving: the benchmark decides
                answer({"error": f"{type(e).__name__}: {e}"})
    for fd in links:
        os.close(fd)
    b.ring_buffer_consume()
    answer({"consumed": consumed[0]})
    b.cleanup()


class FloorClassifiers:
    """The loader process, driven from the benchmark."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.fds: Dict[str, int] = {}
        self.consumed = 0

    def start(self) -> "FloorClassifiers":
        """Starts compiling; `wait_loaded` waits until the programs are loaded."""
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self

    def wait_loaded(self) -> "FloorClassifiers":
        self.fds = self._read()["fds"]
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> Dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"device_floors.py ended (exit {self.proc.wait()})")
        return json.loads(line)

    def command(self, **cmd) -> Dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"device_floors.py: {reply['error']}")
        return reply

    def attach(self, names: List[str], ifindexes: List[int]) -> int:
        return self.command(attach=names, ifindexes=ifindexes)["links"]

    def detach(self) -> None:
        self.command(detach=True)

    def read_consumed(self) -> int:
        self.consumed = self.command(consumed=True)["consumed"]
        return self.consumed

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                out, _ = self.proc.communicate(timeout=10)
                for line in out.splitlines():
                    self.consumed = json.loads(line).get("consumed", self.consumed)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except ValueError:
                pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        self.proc = None

    def __enter__(self) -> "FloorClassifiers":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    floors_main()
