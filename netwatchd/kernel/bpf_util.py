"""Small helpers shared by the probes (no bcc import here: they get bcc's objects)."""
from __future__ import annotations

import ctypes
import os
from importlib import resources
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# clang warnings that some supported kernels' own headers trigger and that say nothing about our
# code; bcc would print them into the daemon's output (and the journal) on every start:
#  -Wduplicate-decl-specifier  6.12's asm/current.h and asm/processor.h (`const const` via
#                              __seg_gs/__percpu macros meant for gcc)
#  -Wignored-attributes        6.12's asm/ibt.h: `nocf_check`, which clang ignores for BPF
#  -Wunused-command-line-argument, -Wunknown-warning-option  older clangs with flags they lack
# Anything else clang says about our programs still shows.
QUIET_KERNEL_HEADER_WARNINGS = [
    "-Wno-duplicate-decl-specifier",
    "-Wno-ignored-attributes",
    "-Wno-unused-command-line-argument",
    "-Wno-unknown-warning-option",
]


class ProbeError(RuntimeError):
    """The BPF side could not be loaded or attached."""


def bpf_source_dir() -> Path:
    """The BPF C sources, as the package netwatchd.bpf: bpf/ of the checkout in an editable
    install (pyproject maps it there), the copy inside the wheel otherwise. bcc compiles from
    a real directory, which both are."""
    return Path(str(resources.files("netwatchd.bpf")))


def return_freed_heap() -> None:
    """bcc's in-process LLVM compile leaves tens of MB of freed heap behind; hand it back."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def table_items(table):
    """Batch lookup where the kernel supports it (one syscall for the lot), else key by key."""
    try:
        return list(table.items_lookup_batch())
    except Exception:
        return [(k, table[k]) for k in table.keys()]



def ring_pages(kib: int) -> int:
    """A ring of `kib` KiB in whole pages, at least one (the kernel wants a page multiple)."""
    return max(1, kib * 1024 // PAGE_SIZE)


class RingReader:
    """Collects a ring buffer's records as raw bytes. Nothing wakes us per record (the programs
    submit with BPF_RB_NO_WAKEUP): drain() consumes what the kernel committed since the last call."""

    def __init__(self, bpf, table: bytes):
        self._bpf = bpf
        self._raw: list = []
        bpf[table].open_ring_buffer(self._on_event)

    def _on_event(self, _ctx, data, size) -> None:
        self._raw.append(ctypes.string_at(data, size))

    def drain(self) -> list:
        self._bpf.ring_buffer_consume()
        raw, self._raw = self._raw, []
        return raw
