"""The kernel matrix: netwatchd on the DEFAULT configuration, end to end, on Debian's own kernels
booted in a VM -- 5.10 (bullseye), 6.1 (bookworm's stock), 6.12 (bookworm's opt-in) -- and on
the host's kernel directly. What each run checks is tests/kernels/smoke.py; the VM runner is
tests/kernels/vm.py (it installs QEMU + virtme-ng and fetches each kernel, its modules and
headers itself). Kernels run one after another, in the background from the start of the
session (tests/kernels/conftest.py): under TCG each takes minutes.

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
SMOKE = vm.SMOKE


def record(kernel: str, result: dict) -> None:
    try:
        known = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        known = {}
    known[kernel] = {k: result.get(k) for k in ("release", "exec_to_ready_sec", "seconds", "fallbacks", "netem",
                                                "connects", "capabilities", "memlock_limit", "perf_event_paranoid",
                                                "tracepoint_without_sys_admin", "peak_rss_at_ready_mib", "peak_rss_mib",
                                                "rss_mib", "bpf_memlock_mib", "fds", "ok")}
    RESULTS.write_text(json.dumps(known, indent=1) + "\n")


def verdict(kernel: str, stdout: str, stderr: str) -> None:
    result = vm.smoke_result(stdout)
    assert result is not None, f"{kernel}: the smoke run printed no result\n{stdout[-4000:]}\n{stderr[-3000:]}"
    record(kernel, result)
    failed = [c for c in result["checks"] if not c["ok"]]
    assert result["ok"] and not failed, f"{kernel}: " + "\n".join(
        f"{c['check']}: {c['detail']}" for c in failed) + "\n" + stdout[-4000:]


@pytest.mark.timeout(len(vm.MATRIX) * (1200 + 150) + 1800 + 300)  # the wait below, with the matrix's own timeouts
@pytest.mark.parametrize("kernel", vm.MATRIX)
def test_debian_kernel_in_a_vm(kernel, matrix):
    require_root_and_bcc()
    requires(matrix is not None, "the kernel matrix was not started (tests/kernels/conftest.py)")
    # it runs in the background from the start of the session; kernels one after another
    r = matrix.result(kernel, timeout=len(vm.MATRIX) * (matrix.timeout + 150) + 1800)
    assert r is not None, f"{kernel}: no result from the VM run in time"
    # 125: the VM itself could not be set up or booted (not the smoke's verdict)
    requires(r.returncode != vm.EXIT_VM_FAILED, f"the {kernel} VM could not start: {r.stderr[-2000:]}")
    assert r.returncode != vm.EXIT_TIMEOUT, f"{kernel}: the VM timed out\n{r.stdout[-4000:]}"
    verdict(kernel, r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.timeout(660)  # the smoke run's own 600 s
def test_host_kernel():
    require_root_and_bcc()
    require_tools("ip", "tc", "bpftool", "dbus-daemon", "busctl")
    r = subprocess.run([sys.executable, *SMOKE], cwd=REPO, capture_output=True, text=True, timeout=600)
    verdict("host", r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr[-3000:]
