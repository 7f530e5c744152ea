"""Shared test plumbing.

`requires(condition, why)` skips a test on a developer's machine that lacks a prerequisite, but
fails it under CI=true: CI runs as root with everything installed, so a skip there would hide a
test that never ran.
"""
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
VENV_BIN = Path(sys.executable).parent


def requires(condition: bool, why: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI=true: {why}")
    pytest.skip(why)


def require_root_and_bcc() -> None:
    requires(os.geteuid() == 0, "needs root")
    try:
        import bcc  # noqa: F401
    except ImportError:
        requires(False, "needs bcc (python3-bpfcc) visible to this interpreter")


def require_tools(*names: str) -> None:
    for name in names:
        requires(shutil.which(name) is not None, f"needs {name} on PATH")


def tool(name: str) -> str:
    """Path of a console script installed in this venv (netwatchd, netwatchctl)."""
    return str(VENV_BIN / name)
