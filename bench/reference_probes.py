"""The floor and reference programs of bench/reference_probes.bpf.c, in a process of their own.

The process loads both, prints their program ids as one JSON line, then consumes the reference
ring buffer as a connect-tracing tool would (epoll, one callback per record) until SIGTERM, when
it prints how many records it consumed.

    python bench/reference_probes.py        (started by ReferenceProbes)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "reference_probes.bpf.c"
RING_PAGES = 64  # 256 KiB with 4 KiB pages
FLOOR_FN = b"tracepoint__syscalls__sys_enter_connect"
REFERENCE_FN = b"tracepoint__syscalls__sys_exit_connect"


def probes_main() -> None:
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: end with the benchmark
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    from bcc import BPF

    b = BPF(src_file=str(SOURCE).encode(), cflags=[f"-DREF_RING_PAGES={RING_PAGES}"])
    consumed = [0]

    def on_record(_ctx, _data, _size):
        consumed[0] += 1

    b[b"ref_events"].open_ring_buffer(on_record)
    print(json.dumps({"pid": os.getpid(), "floor_fd": b.funcs[FLOOR_FN].fd,
                      "reference_fd": b.funcs[REFERENCE_FN].fd}), flush=True)
    while not stop:
        b.ring_buffer_poll(100)
    b.ring_buffer_consume()
    print(json.dumps({"consumed": consumed[0]}), flush=True)
    b.cleanup()


class ReferenceProbes:
    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.fds: Dict[str, int] = {}
        self.consumed = 0

    def start(self) -> "ReferenceProbes":
        """Starts compiling; `wait_loaded` waits until the programs are attached."""
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        return self

    def wait_loaded(self) -> "ReferenceProbes":
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"reference probes did not load (exit {self.proc.wait()})")
        info = json.loads(line)
        self.fds = {"floor": info["floor_fd"], "reference": info["reference_fd"]}
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

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
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> "ReferenceProbes":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    probes_main()
