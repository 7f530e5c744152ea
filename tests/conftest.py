"""Shared test plumbing: prerequisites, and the fixtures every integration test stands on.

`requires(condition, why)` skips a test on a developer's machine that lacks a prerequisite, but
fails it under CI=true: CI runs as root with everything installed, so a skip there would hide a
test that never ran.

Fixtures (the harness itself is the package tests/support/):
  bus         session: a private system bus (dbus-daemon with the distro's system-bus rules and
              our policy). Daemons take turns owning the name on it; a test that needs a second
              daemon at once, or restarts the bus, makes a PrivateSystemBus of its own.
  make_world  module: the LAN-world factory, make_world(prefix, journal=..., tools=...) -> World
              (tests/support/world.py); every world is removed at the module's end.
  make_daemon module: the daemon factory, make_daemon(overrides, about=...) -> a started netwatchd
              on the shipped config (the rule applied, time compressed) on `bus`, in a world of
              its own; stopped at the module's end.
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


def require_bus_tools() -> None:
    """Root (only root may own the bus name), the bus's tools, and group netwatchd (the policy's)."""
    import grp

    requires(os.geteuid() == 0, "needs root (only root may own the bus name)")
    require_tools("dbus-daemon", "busctl", "dbus-send", "setpriv")
    try:
        grp.getgrnam("netwatchd")
    except KeyError:
        requires(False, "needs group netwatchd (make install or scripts/setup.sh --test creates it)")


def tool(name: str) -> str:
    """Path of a console script installed in this venv (netwatchd, netwatchctl)."""
    return str(VENV_BIN / name)


@pytest.fixture(scope="session")
def bus():
    from tests.support.daemon import PrivateSystemBus

    requires(os.geteuid() == 0, "needs root (dbus-daemon drops to messagebus)")
    require_tools("dbus-daemon", "busctl")
    with PrivateSystemBus() as b:
        yield b


@pytest.fixture(scope="module")
def make_world(bus):
    from tests.support.world import World

    worlds = []

    def make(prefix: str = "nww", journal: bool = False, rate_limited: bool = False, tools=()) -> World:
        from tests.support.journal import JOURNALD

        require_root_and_bcc()
        require_tools("ip", *(("unshare", "nsenter", "journalctl") if journal else ()), *tools)
        requires(not journal or os.path.exists(JOURNALD), f"needs {JOURNALD}")
        world = World(bus, prefix, journal=journal, rate_limited=rate_limited)
        worlds.append(world)
        return world.start()

    yield make
    errors = []
    for world in reversed(worlds):
        try:
            world.cleanup()
        except Exception as e:  # noqa: BLE001 - every world is cleaned, then the errors reported
            errors.append(str(e))
    assert not errors, errors


@pytest.fixture(scope="module")
def make_daemon(make_world):
    def make(overrides=None, about=(), **options):
        return make_world("nwd").start_daemon(overrides, about=about, **options)

    return make
