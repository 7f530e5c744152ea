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
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VMRUN = HERE / "vmrun.sh"
SMOKE = ["tests/kernels/smoke.py"]  # what each VM runs (relative to the checkout, its cwd)

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


class Matrix:
    """The kernels, one VM after another, in a background thread: started as soon as pytest has
    collected (tests/kernels/conftest.py), so the VMs (one core, under TCG) run while the host
    tests run on the other, and each matrix test only waits for its kernel's result. Every
    process it starts is a session leader of its own and is stopped by its pid."""

    def __init__(self, kernels: List[str], command: List[str], timeout: float = 1200) -> None:
        self.kernels, self.command, self.timeout = list(kernels), list(command), timeout
        self.results: dict = {}
        self._done = {k: threading.Event() for k in self.kernels}
        self._proc: Optional[subprocess.Popen] = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run_all, name="kernel-matrix", daemon=True)

    def start(self) -> "Matrix":
        self._thread.start()
        return self

    def result(self, kernel: str, timeout: float) -> Optional[subprocess.CompletedProcess]:
        """That kernel's run (None if it did not finish within `timeout`)."""
        self._done[kernel].wait(timeout)
        return self.results.get(kernel)

    def stop(self) -> None:
        self._stopping = True
        p = self._proc
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)  # vmrun.sh and the QEMU it started: ours alone
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self._thread.join(60)

    def _run_all(self) -> None:
        fetched = self._spawn([str(VMRUN), "fetch", *self.kernels], 1800)
        for kernel in self.kernels:
            if fetched.returncode != 0:
                self.results[kernel] = fetched  # exit 125: the VMs could not be set up
            elif not self._stopping:
                self.results[kernel] = self._spawn([str(VMRUN), kernel, "--", *self.command], self.timeout,
                                                   {"NWVM_TIMEOUT": str(int(self.timeout))})
            self._done[kernel].set()

    def _spawn(self, cmd: List[str], timeout: float, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        try:
            self._proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, **(env or {})), text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
            out, err = self._proc.communicate(timeout=timeout + 120)
            return subprocess.CompletedProcess(cmd, self._proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            out, err = self._proc.communicate()
            return subprocess.CompletedProcess(cmd, EXIT_TIMEOUT, out, err)
        except OSError as e:
            return subprocess.CompletedProcess(cmd, EXIT_VM_FAILED, "", str(e))


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
