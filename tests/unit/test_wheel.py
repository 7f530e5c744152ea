"""A wheel built from the tree carries the BPF sources, and an installed daemon finds them as
package resources (netwatchd.bpf), not through paths next to a checkout."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BPF_FILES = sorted(p.name for p in (ROOT / "bpf").iterdir() if p.suffix in (".c", ".h"))


def test_the_wheel_holds_the_bpf_sources_and_the_package_finds_them(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("netwatchd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.split("/")[-1] for n in names if n.startswith("netwatchd/bpf/") and n[-2:] in (".c", ".h")) \
        == BPF_FILES
    assert {"netwatchd/kernel/connect_probe.py", "netwatchd/ctl/main.py", "netwatchd/store/sqlite.py"} <= set(names)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    out = subprocess.run(
        [sys.executable, "-c", "from netwatchd.kernel.bpf_util import bpf_source_dir; print(bpf_source_dir())"],
        cwd="/", env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        check=True, timeout=60)
    found = Path(out.stdout.strip())
    assert found == target / "netwatchd" / "bpf"
    assert sorted(p.name for p in found.iterdir() if p.suffix in (".c", ".h")) == BPF_FILES
