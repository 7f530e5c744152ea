"""What the system tests share across modules: the Debian package, built once per session.

  deb  session: `make deb` on the host (dpkg-buildpackage, then lintian: no error, no warning),
       from the checkout; the path of dist/netwatchd_<version>_all.deb. Used by
       tests/system/test_debian_package.py and tests/system/test_fleet.py.
"""
from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from netwatchd import __version__
from tests.conftest import REPO, requires, require_tools
from tests.system.container import log

DEB = f"netwatchd_{__version__}_all.deb"


@pytest.fixture(scope="session")
def deb():
    """`make deb` on the host: the .deb, built from the checkout and checked by lintian."""
    requires(os.geteuid() == 0, "needs root (build dependencies, mmdebstrap, systemd-nspawn, BPF)")
    require_tools("make", "git", "apt-get")
    t0 = time.monotonic()
    r = subprocess.run(["make", "-s", "deb"], cwd=REPO, capture_output=True, text=True, timeout=1200,
                       stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"make deb failed (rc {r.returncode}):\n{out[-6000:]}"
    tags = [line for line in out.splitlines() if re.match(r"[EW]: ", line)]
    assert not tags, f"lintian: {tags}"
    path = REPO / "dist" / DEB
    assert path.is_file(), out
    log(f"make deb: {time.monotonic() - t0:.1f}s (build and lintian), {path.stat().st_size / 1024:.0f} KiB")
    return path
