"""Small helpers shared by the probes (no bcc import here)."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
BPF_DIR = Path(__file__).resolve().parent / "bpf"


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
    """bpf/ next to the package in a checkout, or the copy installed inside the package."""
    checkout = Path(__file__).resolve().parent.parent / "bpf"
    return checkout if (checkout / "connect.bpf.c").exists() else BPF_DIR


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

