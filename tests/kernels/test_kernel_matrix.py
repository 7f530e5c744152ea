"""The kernel matrix: netwatchd on the DEFAULT configuration, end to end, on Debian's own kernels
booted in a VM -- 5.10 (bullseye), 6.1 (bookworm's stock), 6.12 (bookworm's opt-in) -- and on
the host's kernel directly. What each run checks is tests/kernels/smoke.py; the VM runner is
tests/kernels/vm.py (it installs QEMU + virtme-ng and fetches each kernel, its modules and
headers itself). Kernels run one after another: under TCG each takes minutes.

exec -> READY per kernel lands in $NETWATCHD_MATRIX_RESULTS (default
/tmp/netwatchd-kernel-matrix.json), one entry per kernel, with the fallbacks it used.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require_root_and_bcc, require_tools, requires
from tests.kernels import vm

pytestmark = pytest.mark.root

RESULTS = Path(os.environ.get("NETWATCHD_MATRIX_RESULTS", "/tmp/netwatchd-kernel-matrix.json"))
SMOKE = ["tests/kernels/smoke.py"]


def record(kernel: str, result: dict) -> None:
    try:
        known = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        known = {}
    known[kernel] = {k: result.get(k) for k in ("release", "exec_to_ready_sec", "seconds", "fallbacks", "ok")}
    RESULTS.write_text(json.dumps(known, indent=1) + "\n")


def verdict(kernel: str, stdout: str, stderr: str) -> None:
    result = vm.smoke_result(stdout)
    assert result is not None, f"{kernel}: the smoke run printed no result\n{stdout[-4000:]}\n{stderr[-3000:]}"
    record(kernel, result)
    failed = [c for c in result["checks"] if not c["ok"]]
    assert result["ok"] and not failed, f"{kernel}: " + "\n".join(
        f"{c['check']}: {c['detail']}" for c in failed) + "\n" + stdout[-4000:]


@pytest.fixture(scope="module")
def kernels_fetched():
    """QEMU, virtme-ng and the kernels: installed and downloaded once, cached across runs."""
    require_root_and_bcc()
    r = vm.fetch(list(vm.MATRIX))
    requires(r.returncode == 0, f"cannot set up the VMs (vmrun.sh fetch, exit {r.returncode}): {r.stderr[-1500:]}")


@pytest.mark.parametrize("kernel", vm.MATRIX)
def test_debian_kernel_in_a_vm(kernel, kernels_fetched):
    r = vm.run(kernel, [sys.executable, *SMOKE], timeout=1200)
    # 125: the VM itself could not be set up or booted (not the smoke's verdict)
    requires(r.returncode != vm.EXIT_VM_FAILED, f"the {kernel} VM could not start: {r.stderr[-2000:]}")
    assert r.returncode != vm.EXIT_TIMEOUT, f"{kernel}: the VM timed out\n{r.stdout[-4000:]}"
    verdict(kernel, r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr[-3000:]


def test_host_kernel():
    require_root_and_bcc()
    require_tools("ip", "tc", "bpftool", "dbus-daemon", "busctl")
    r = subprocess.run([sys.executable, *SMOKE], cwd=REPO, capture_output=True, text=True, timeout=600)
    verdict("host", r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr[-3000:]
