"""Fallback for bench/udp_flood.c when no C compiler is installed: the same commands and
answers, a socket.send loop instead of sendmmsg (several times slower, so the benchmark says so).

    python bench/udp_flood.py send DST_IP PORT
    python bench/udp_flood.py sink PORT
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time

PAYLOAD = b"netwatchd-bench!!\0"  # 18 bytes: 60-byte frames


def main(argv) -> int:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        return 1
    if len(argv) == 3 and argv[0] == "send":
        return send_loop(argv[1], int(argv[2]))
    if len(argv) == 2 and argv[0] == "sink":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", int(argv[1])))
        print("ready", flush=True)
        sys.stdin.read()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


def send_loop(dst: str, port: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((dst, port))
    send, now = s.send, time.monotonic
    print(json.dumps({"pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        mode, _, arg = line.strip().partition(" ")
        if mode not in ("n", "t"):
            break
        arg = int(arg)
        sent = calls = errors = 0
        t0 = now()
        if mode == "n":
            while sent < arg:
                calls += 1
                try:
                    send(PAYLOAD)
                    sent += 1
                except OSError:
                    errors += 1
        else:
            deadline = t0 + arg / 1000.0
            while True:
                if (calls & 63) == 0 and now() >= deadline:
                    break
                calls += 1
                try:
                    send(PAYLOAD)
                    sent += 1
                except OSError:
                    errors += 1
        print(json.dumps({"sent": sent, "calls": calls, "errors": errors, "t0": t0, "t1": now()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
