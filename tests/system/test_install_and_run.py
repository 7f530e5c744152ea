"""Two README claims about installing and running, in a throw-away Debian 12 rootfs
(tests/system/container.py; not booted: no systemd and no system bus runs there, as on a
machine whose PID 1 is not systemd):

- `make install` puts the config in /etc/netwatchd/netwatchd.yaml "only if absent": a fresh
  install writes the shipped file; an operator's edited file survives a second `make install`
  byte for byte.
- `make run` "starts the system bus if none runs": its recipe runs scripts/system-bus.sh before
  the daemon; with no bus, the script installs our policy and starts dbus-daemon --system, which
  then answers on the standard socket with the policy loaded; run again, it is quiet and starts
  nothing. (The daemon itself, which `make run` then execs, needs tracefs and BPF in a booted
  container: tests/system/test_systemd_service.py runs the same daemon under systemd.)

Every step runs in one provisioning command; its output is one `key=value` line per fact.
"""
from __future__ import annotations

import os

import pytest

from tests.conftest import REPO, requires, require_tools
from tests.system.container import CACHE_DIR, Container, new_workdir, repo_files, rootfs_tarball

# a throw-away rootfs (up to 15 min on a cold cache): a timeout of its own
pytestmark = [pytest.mark.root, pytest.mark.timeout(1800)]

SRC = "/root/netwatchd"
CONFIG = "/etc/netwatchd/netwatchd.yaml"
POLICY = "/usr/share/dbus-1/system.d/org.netwatchd.Netwatchd1.conf"

SCRIPT = f"""
set -eu
cd {SRC}
fact() {{ echo "$1=$2"; }}
fact config_before "$(test -e {CONFIG} && echo present || echo absent)"
make install >/tmp/install1.log 2>&1 || {{ tail -20 /tmp/install1.log; exit 1; }}
fact fresh_equals_shipped "$(cmp -s {CONFIG} config/netwatchd.yaml && echo yes || echo no)"
sed -i 's/^tick_interval_sec: 1.0$/tick_interval_sec: 2.5/' {CONFIG}
echo '# the operator was here' >>{CONFIG}
fact edited_sha "$(sha256sum <{CONFIG} | cut -d' ' -f1)"
make install >/tmp/install2.log 2>&1 || {{ tail -20 /tmp/install2.log; exit 1; }}
fact after_sha "$(sha256sum <{CONFIG} | cut -d' ' -f1)"
fact tick_line "$(grep '^tick_interval_sec:' {CONFIG})"

make -n run | tr '\\n' '|' | sed 's/^/make_n_run=/'; echo
rm -f {POLICY}  # as on a machine where make install never ran
fact bus_before "$(busctl --system status >/dev/null 2>&1 && echo up || echo down)"
scripts/system-bus.sh >/tmp/bus1.out 2>&1
fact bus_script_rc 0
fact bus_script_out "$(tr '\\n' '|' </tmp/bus1.out)"
fact bus_after "$(busctl --system status >/dev/null 2>&1 && echo up || echo down)"
pid=$(cat /run/dbus/pid)
fact bus_comm "$(cat /proc/$pid/comm)"
fact policy_installed "$(cmp -s {POLICY} systemd/org.netwatchd.Netwatchd1.conf && echo yes || echo no)"
# the running bus read our policy: root may own the name, nobody else
fact root_may_own "$(busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus RequestName su org.netwatchd.Netwatchd1 0 2>&1)"
scripts/system-bus.sh >/tmp/bus2.out 2>&1
fact bus_again_out "$(tr '\\n' '|' </tmp/bus2.out)"
fact bus_pid_same "$(test "$(cat /run/dbus/pid)" = "$pid" && echo yes || echo no)"
kill "$pid"
"""


def facts(output: str) -> dict:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def result():
    requires(os.geteuid() == 0, "needs root (mmdebstrap, systemd-nspawn)")
    require_tools("systemd-nspawn", "mmdebstrap", "unshare", "tar", "zstd", "git")
    box = Container(new_workdir(), f"nwinst-{os.getpid()}")
    try:
        box.create(rootfs_tarball(REPO))
        box.copy_in(REPO, repo_files(REPO), SRC)
        pip_cache = CACHE_DIR / "pip-cache"
        pip_cache.mkdir(exist_ok=True)
        yield facts(box.provision(SCRIPT, binds=[f"{pip_cache}:/root/.cache/pip"]))
    finally:
        box.destroy()


def test_make_install_writes_the_shipped_config_when_there_is_none(result):
    assert (result["config_before"], result["fresh_equals_shipped"]) == ("absent", "yes"), result


def test_make_install_keeps_an_existing_config(result):
    assert result["after_sha"] == result["edited_sha"], result
    assert result["tick_line"] == "tick_interval_sec: 2.5", result


def test_make_run_runs_system_bus_sh_before_the_daemon(result):
    steps = [s.strip() for s in result["make_n_run"].split("|") if s.strip()]
    bus = steps.index("scripts/system-bus.sh")
    assert steps[bus + 1] == "exec .venv/bin/netwatchd --config config/netwatchd.yaml", steps


def test_system_bus_sh_starts_a_bus_with_our_policy_when_none_runs(result):
    assert result["bus_before"] == "down", result
    assert result["bus_script_out"] == (f"system-bus: installed {POLICY}|"
                                        "system-bus: started the system bus (dbus-daemon --system)|"), result
    assert (result["bus_after"], result["bus_comm"], result["policy_installed"]) == ("up", "dbus-daemon", "yes"), result
    assert result["root_may_own"] == "u 1", result  # DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER


def test_system_bus_sh_is_quiet_when_both_are_there(result):
    assert (result["bus_again_out"], result["bus_pid_same"]) == ("", "yes"), result
