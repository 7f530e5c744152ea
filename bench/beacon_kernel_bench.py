"""The kernel's share of beacons: ns per packet of the TC classifier with the beacon_pairs map
and without it, side by side in one run (issue 14), as root.

    .venv/bin/python bench/beacon_kernel_bench.py            (make bench-beacons; ~20 s)
    .venv/bin/python bench/beacon_kernel_bench.py --quick

bpf/device.bpf.c is compiled twice, with NW_BEACON_PAIRS as the daemon sets it (16384) and with
0 (no map: the classifier as it was), and both programs, and the floor classifiers of
bench/device_floors.bpf.c (one per-CPU counter; a counter per MAC in a hash), are run on the same
frames with BPF_PROG_TEST_RUN (no interface, no traffic): a TCP SYN (a connection start, the only
packet that touches the map), a TCP ACK and a UDP datagram (which must cost the same with or
without it). The kernel reports the mean time per run; rounds alternate the programs so a busy
machine disturbs all alike, and the median of the rounds is printed.

A repeated SYN is the same packet, so it measures the steady path of a pair already in the map
(lookup, compare, four stores); a new pair's insert happens once per pair. A repeated SYN has
the same source port, which the map takes for a retransmission, so the SYN is run in two
variants, same port (the early return) and with the store path forced by alternating ports
between runs.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import struct
import sys
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BPF_PROG_TEST_RUN = 10
SYS_BPF = 321  # x86_64


class TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


libc = ctypes.CDLL(None, use_errno=True)


def test_run(fd: int, frame: bytes, repeat: int) -> float:
    """Mean ns per run of program `fd` on `frame`."""
    buf = ctypes.create_string_buffer(frame, len(frame))
    attr = TestRunAttr(prog_fd=fd, data_size_in=len(frame), data_in=ctypes.addressof(buf), repeat=repeat)
    if libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return float(attr.duration)


def checksum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF


def frame(proto: str, sport: int = 40000, flags: int = 0x02) -> bytes:
    eth = bytes.fromhex("0200000000020200000000010800")
    if proto == "tcp":
        l4 = struct.pack("!HHIIBBHHH", sport, 443, 1, 0, 5 << 4, flags, 64240, 0, 0)
        p = 6
    else:
        l4 = struct.pack("!HHHH", sport, 5000, 8 + 18, 0) + b"x" * 18
        p = 17
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, p, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return eth + ip + l4


def load() -> Dict[str, int]:
    from bcc import BPF

    from netwatchd.kernel.bpf_util import bpf_source_dir

    bpf_dir = bpf_source_dir()
    programs, keep = {}, []
    for label, pairs in (("with beacon map", 16384), ("without (as before)", 0)):
        b = BPF(src_file=str(bpf_dir / "device.bpf.c").encode(), cflags=[
            f"-I{bpf_dir}", "-DNW_MAX_DEVICES=4096", "-DNW_MAX_PATTERNS=65536", "-DNW_DEV_RING_PAGES=256",
            f"-DNW_BEACON_PAIRS={pairs}"])
        programs[label] = b.load_func(b"nw_tc_ingress", BPF.SCHED_CLS).fd
        keep.append(b)
    floors = BPF(src_file=str(REPO / "bench" / "device_floors.bpf.c").encode(), cflags=["-DREF_RING_PAGES=16"])
    programs["floor: per-CPU counter"] = floors.load_func(b"floor_count_in", BPF.SCHED_CLS).fd
    programs["floor: counter per MAC"] = floors.load_func(b"floor_mac_in", BPF.SCHED_CLS).fd
    keep.append(floors)
    load.keep = keep  # the programs live as long as their BPF objects
    return programs


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1
    repeat, rounds = (20000, 3) if args.quick else (200000, 9)
    programs = load()
    frames = {"SYN, same port (a retransmission)": [frame("tcp")],
              "SYN, new port each run (a new start)": [frame("tcp", 40000), frame("tcp", 40001)],
              "TCP ACK": [frame("tcp", flags=0x10)], "UDP": [frame("udp")]}
    results: Dict[str, Dict[str, List[float]]] = {f: {p: [] for p in programs} for f in frames}
    for _ in range(rounds):
        for fname, variants in frames.items():
            for label, fd in programs.items():
                if len(variants) == 1:
                    results[fname][label].append(test_run(fd, variants[0], repeat))
                else:  # alternate: every run a new source port for the same pair
                    runs = [test_run(fd, variants[i % 2], 1) for i in range(repeat // 100)]
                    results[fname][label].append(statistics.median(runs))
    print(f"ns per packet (BPF_PROG_TEST_RUN, median of {rounds} rounds of {repeat} runs)")
    for fname in frames:
        row = {label: statistics.median(v) for label, v in results[fname].items()}
        base = row["without (as before)"]
        cells = " | ".join(f"{label} {ns:.0f}" for label, ns in row.items())
        print(f"  {fname:<38} {cells} | with/without {row['with beacon map'] / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
