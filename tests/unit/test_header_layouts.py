"""The ctypes mirrors against the C headers themselves: a C compiler reads bpf/*.h and prints
each struct's size and every mirrored field's offset, so the oracle is the headers' layout, not
the decoders' own structs. A field the mirror names that the header lacks fails to compile."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from netwatchd.connects.records import ConnEvent, ConnEventLong, KernelCounts, ProcEntry
from netwatchd.devices.records import BeaconKey, BeaconStarts, DevCounters, DevEvent

BPF = Path(__file__).resolve().parents[2] / "bpf"
CONNECT_HEADER = BPF / ("connect.h" if (BPF / "connect.h").exists() else "netwatch.h")

MIRRORS = [
    (CONNECT_HEADER, "nw_counts", KernelCounts),
    (CONNECT_HEADER, "nw_proc_entry", ProcEntry),
    (CONNECT_HEADER, "nw_conn_event", ConnEvent),
    (CONNECT_HEADER, "nw_conn_event_long", ConnEventLong),
    (BPF / "device.h", "nw_dev_counters", DevCounters),
    (BPF / "device.h", "nw_dev_event", DevEvent),
    (BPF / "device.h", "nw_beacon_key", BeaconKey),
    (BPF / "device.h", "nw_beacon_starts", BeaconStarts),
]

PRELUDE = """#include <stddef.h>
#include <stdio.h>
#include <linux/types.h>
typedef __u8 u8; typedef __u16 u16; typedef __u32 u32; typedef __u64 u64;
typedef __s32 s32; typedef __s64 s64;
"""


def c_layouts(tmp_path: Path) -> dict:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.fail("no C compiler: scripts/setup.sh --test installs gcc")
    lines = [PRELUDE] + [f'#include "{h}"' for h in sorted({str(h) for h, _, _ in MIRRORS})]
    lines.append("int main(void) {")
    for _, struct, mirror in MIRRORS:
        lines.append(f'printf("{struct} size %zu\\n", sizeof(struct {struct}));')
        for name, *_ in mirror._fields_:
            lines.append(f'printf("{struct} {name} %zu\\n", offsetof(struct {struct}, {name}));')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-o", str(exe), str(src)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {tuple(line.split()[:2]): int(line.split()[2]) for line in out.splitlines()}


def test_every_mirror_has_the_headers_size_and_offsets(tmp_path):
    layout = c_layouts(tmp_path)
    for _, struct, mirror in MIRRORS:
        assert ctypes.sizeof(mirror) == layout[(struct, "size")], struct
        for name, *_ in mirror._fields_:
            assert getattr(mirror, name).offset == layout[(struct, name)], f"{struct}.{name}"
