"""The kernel matrix's VM runner: boots one of Debian's own kernels under QEMU with the host's
filesystem visible (virtme-ng), runs a command in it as root, returns what it printed.

vmrun.sh does the work (installs QEMU + virtme-ng, fetches kernel, modules and headers from
Debian's archive through a private apt state into /opt/netwatchd-kernels, boots). This module
is the Python face the tests use, and a command line:

    .venv/bin/python tests/kernels/vm.py 6.1 -- .venv/bin/python tests/kernels/smoke.py

Under TCG (this machine's /dev/kvm is nested PVM, which stock kernels cannot run) a VM boots in
15-25 s and runs about 5-15x slower than the host; with real KVM it is fast.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VMRUN = HERE / "vmrun.sh"

# Debian series -> what runs it: bullseye's 5.10, bookworm's stock 6.1, bookworm's opt-in 6.12
MATRIX = ("5.10", "6.1", "6.12")

EXIT_TIMEOUT = 124  # the VM hit its time limit
EXIT_VM_FAILED = 125  # download, setup or boot failed: not the command's verdict


def fetch(kernels: List[str], timeout: float = 1800) -> subprocess.CompletedProcess:
    """Install QEMU + virtme-ng and download the kernels (idempotent, cached)."""
    return subprocess.run([str(VMRUN), "fetch", *kernels], capture_output=True, text=True, timeout=timeout)


def run(kernel: str, command: List[str], timeout: float = 900, cwd: Path = REPO,
        env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """`command` as root in a VM on `kernel`, in `cwd`; exit code 124/125 = the VM, not the command."""
    env = dict(os.environ, **(env or {}), NWVM_TIMEOUT=str(int(timeout)))
    return subprocess.run([str(VMRUN), kernel, "--", *command], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout + 120)


def smoke_result(stdout: str) -> Optional[dict]:
    """The `SMOKE {json}` line tests/kernels/smoke.py prints."""
    for line in stdout.splitlines():
        if line.startswith("SMOKE "):
            return json.loads(line[len("SMOKE "):])
    return None


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: vm.py KERNEL -- COMMAND...")
    r = run(sys.argv[1], sys.argv[3:])
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    sys.exit(r.returncode)
