"""The relay process behind `delay_relay.DelayedPeer`: copies IP packets between two TUN file
descriptors it inherited, holding each packet read from A (the host side) for `--delay-ms`
before writing it to B (the namespace side). B to A is copied at once.

    python3 tun_relay.py --fd-a N --fd-b M --delay-ms 20 --parent PID

Exact by construction: the delay is the same for every packet, so a FIFO of (due, packet) is
already sorted by due time; packets leave in the order they came and none is dropped by the
relay (a failed write is counted, never silent). No busy waiting: the loop sleeps in select()
until the head of the FIFO is due, select() because its timeout has microsecond resolution
where poll()/epoll() round up to whole milliseconds.

Prints "ready" once running. On SIGUSR1 prints one line of counters:
    a2b_in a2b_out b2a_in b2a_out errors queued late_max_us late_over_1ms
(late = how long after its due time a delayed packet was actually written).
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import os
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
READ_SIZE = 65536
# Packets read per fd per turn: a flood in one direction must not hold back due writes.
READ_BURST = 64


class Counters:
    def __init__(self) -> None:
        self.a2b_in = self.a2b_out = self.b2a_in = self.b2a_out = self.errors = 0
        self.late_max = 0.0
        self.late_over_1ms = 0
        self.queue: collections.deque = collections.deque()  # (due, packet), due ascending


def die_with_parent(parent: int) -> None:
    """The relay must not outlive the test that started it (SIGKILL'd pytest included)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The default 50 us slack would be added to every timed wake-up; 1 ns asks for none.
    libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit("parent gone before the relay started")


def run_ahead_of_the_load() -> None:
    """SCHED_FIFO: the relay stands for a wire, and a wire does not wait for a CPU. Under a
    loaded make test (two cores, busy daemons and senders) a relay at normal priority woke
    1-3 ms late and a 20 ms peer measured 22-23 ms (stop 17's CI); at real-time priority it
    preempts the load the moment a packet is due. It sleeps in select() otherwise, and the
    kernel's RT throttling (95% by default) bounds it even under a flood."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except OSError as e:  # no CAP_SYS_NICE (a container): run anyway, late wake-ups are counted
        print(f"tun_relay: cannot run at real-time priority ({e}); lateness will show in the counters",
              file=sys.stderr, flush=True)


def drain(fd: int, limit: int):
    """Up to `limit` packets waiting on a non-blocking TUN fd."""
    for _ in range(limit):
        try:
            yield os.read(fd, READ_SIZE)
        except BlockingIOError:
            return


def write(fd: int, packet: bytes, c: Counters) -> bool:
    try:
        os.write(fd, packet)
        return True
    except OSError as e:
        c.errors += 1
        print(f"tun_relay: write of {len(packet)} bytes failed: {e}", file=sys.stderr, flush=True)
        return False


def relay(fd_a: int, fd_b: int, delay: float, c: Counters) -> None:
    queue = c.queue
    clock = time.monotonic
    while True:
        now = clock()
        while queue and queue[0][0] <= now:
            due, packet = queue.popleft()
            late = now - due
            if late > c.late_max:
                c.late_max = late
            if late > 0.001:
                c.late_over_1ms += 1
            if write(fd_b, packet, c):
                c.a2b_out += 1
            now = clock()
        timeout = max(0.0, queue[0][0] - now) if queue else None
        readable, _, _ = select.select([fd_a, fd_b], [], [], timeout)
        if fd_b in readable:
            for packet in drain(fd_b, READ_BURST):
                c.b2a_in += 1
                if write(fd_a, packet, c):
                    c.b2a_out += 1
        if fd_a in readable:
            for packet in drain(fd_a, READ_BURST):
                c.a2b_in += 1
                # Due time counts from when the relay read the packet: its time waiting in the
                # TUN queue (microseconds) is the only part of the path not delayed on purpose.
                queue.append((clock() + delay, packet))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fd-a", type=int, required=True)
    p.add_argument("--fd-b", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--parent", type=int, required=True)
    args = p.parse_args()
    die_with_parent(args.parent)
    run_ahead_of_the_load()
    for fd in (args.fd_a, args.fd_b):
        os.set_blocking(fd, False)
    c = Counters()

    def report(*_):
        print(c.a2b_in, c.a2b_out, c.b2a_in, c.b2a_out, c.errors, len(c.queue),
              int(c.late_max * 1e6), c.late_over_1ms, flush=True)

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    relay(args.fd_a, args.fd_b, args.delay_ms / 1000.0, c)


if __name__ == "__main__":
    main()
