"""netwatchctl alerts / watch / status against the stand-in daemon (alert_service.py: the real
D-Bus interface and alert pipeline, no BPF, on the shipped thresholds) on a real dbus-daemon with
the project's policy: what they print, with and without --json, and their exit codes."""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.conftest import require_bus_tools, tool
from tests.integration.alert_bus_support import AlertService, new_devices
from tests.support.daemon import PrivateSystemBus, as_user, ctl as bus_ctl
from tests.support.oracles import readme_alert_kinds
from tests.support.processes import LineProcess

pytestmark = pytest.mark.root

MEMBER = as_user("nobody", "nogroup", ["netwatchd"])
OUTSIDER = as_user("nobody", "nogroup")
DENIED = "netwatchctl: access denied by the bus policy: only root and members of group netwatchd may query netwatchd ("
NOT_RUNNING = "netwatchctl: netwatchd is not running or not reachable: "
WATCHING = "netwatchctl: watching for alerts (Ctrl-C to stop)"


@pytest.fixture(scope="module")
def service(bus, tmp_path_factory):
    require_bus_tools()
    with AlertService(bus, tmp_path_factory.mktemp("state")) as s:
        s.raised = s.tick(command_connects={"nwstorm": 1000}, command_pids={"nwstorm": [4242]},
                          address_changes=[{"ip": "10.9.9.9", "old_mac": "00:16:3e:aa:00:05",
                                            "new_mac": "00:16:3e:aa:00:06", "flip_flop": True}])
        s.raised += s.tick(new_devices=new_devices(5))
        yield s


@pytest.fixture
def own_bus():
    """A bus of the test's own: the module's service owns the name on the session's."""
    require_bus_tools()
    with PrivateSystemBus() as b:
        yield b


def ok(bus, *args: str, prefix=None) -> str:
    r = bus_ctl(bus, *args, prefix=prefix)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    return r.stdout


def watch(bus, *args: str, prefix=None) -> LineProcess:
    w = LineProcess([tool("netwatchctl"), "watch", *args], bus, prefix)
    w.wait_line(WATCHING, stream="err")  # subscribed: from here on nothing raised is missed
    return w


# -- alerts --------------------------------------------------------------------------------------------

def test_alerts_table(service, bus):
    lines = ok(bus, "alerts").splitlines()
    assert lines[0].split() == ["TIME", "KIND", "SUBJECT", "MESSAGE"]
    newest_first = list(reversed(service.raised))
    assert len(lines) == 1 + len(newest_first) == 8
    for line, alert in zip(lines[1:], newest_first):
        assert line.split()[2:4] == [alert["kind"], alert["subject"]]
        assert line.endswith(alert["message"])
    assert "flip flop: 10.9.9.9 went back from 00:16:3e:aa:00:05 to 00:16:3e:aa:00:06" in lines[-1]


def test_alerts_limit_and_json(service, bus):
    records = json.loads(ok(bus, "alerts", "--limit", "3", "--json"))
    newest = list(reversed(service.raised))[:3]
    assert records == [{**a, "observed": float(a["observed"]), "baseline": float(a["baseline"]),
                        "score": float(a["score"])} for a in newest]
    assert len(ok(bus, "alerts", "--limit", "2").splitlines()) == 3


def test_alerts_errors(service, bus):
    r = bus_ctl(bus, "alerts", "--limit", "1001")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "netwatchctl: limit must be at most 1000, got 1001\n")
    r = bus_ctl(bus, "alerts", "--limit", "-1")
    assert (r.returncode, r.stderr) == (2, "netwatchctl: --limit must not be negative\n")
    r = bus_ctl(bus, "alerts", prefix=OUTSIDER)
    assert r.returncode == 4 and r.stderr.startswith(DENIED), r.stderr
    assert ok(bus, "alerts", "--limit", "1", prefix=MEMBER).count("\n") == 2


def test_alerts_when_there_are_none(own_bus, tmp_path):
    with AlertService(own_bus, tmp_path):
        assert ok(own_bus, "alerts") == "No alerts.\n"
        assert json.loads(ok(own_bus, "alerts", "--json")) == []


def test_alerts_without_daemon(own_bus):
    r = bus_ctl(own_bus, "alerts")
    assert r.returncode == 3 and r.stderr.startswith(NOT_RUNNING), r.stderr


# -- status ----------------------------------------------------------------------------------------------

def test_status_shows_alerts_and_learning(service, bus):
    lines = [line.strip() for line in ok(bus, "status").splitlines()]
    # every kind of the README's table, in its order, 0 unless the service raised it
    counts = {kind: {"new_device": 5, "address_change": 1, "connect_rate": 1}.get(kind, 0)
              for kind in readme_alert_kinds()}
    assert "Alerts: 7 raised: " + ", ".join(f"{k} {n}" for k, n in counts.items()) in lines
    assert "Learning: no" in lines
    props = json.loads(ok(bus, "status", "--json"))
    assert props["AlertCounts"] == counts
    assert (props["AlertsRaised"], props["Learning"]) == (7, False)


def test_status_while_learning_and_when_off(own_bus, tmp_path):
    """Learning, and alerts.enabled false."""
    with AlertService(own_bus, tmp_path / "a", {"alerts": {"learning_period_sec": 3600}}):
        assert "Learning: yes (new devices are learnt without alerts)" in ok(own_bus, "status")
    with AlertService(own_bus, tmp_path / "b", {"alerts": {"enabled": False}}, about=("alerts.enabled",)):
        out = ok(own_bus, "status")
        assert "Alerts: off (alerts.enabled is false)" in out and "Learning" not in out


# -- watch -------------------------------------------------------------------------------------------------

def test_watch_prints_each_alert_with_its_message(service, bus):
    w = watch(bus)
    try:
        raised = service.tick(new_devices=new_devices(1, start=100),
                              device_new_ports={"00:16:3e:bb:00:01": 100}, device_new_peers={"00:16:3e:bb:00:01": 2})
        assert [a["kind"] for a in raised] == ["fan_out", "new_device"]  # the new device a tick later
        for alert in raised:
            w.wait_line(lambda line, a=alert: line.endswith(f"  {a['id']}  {a['kind']}  {a['subject']}  {a['message']}"))
        w.signal(signal.SIGINT)  # Ctrl-C
        assert w.wait() == 0
    finally:
        w.stop()
    assert len(w.out) == 2
    assert w.err == [WATCHING]


def test_watch_json_one_object_per_line_until_sigterm(service, bus):
    """A burst of 120 alerts in one tick: each with its full record, even the oldest, which is
    already beyond the newest 100 when its signal is handled."""
    w = watch(bus, "--json")
    try:
        raised = service.tick(new_devices=new_devices(120, start=1000))
        w.wait_line(lambda line: raised[-1]["id"] in line)
        w.signal(signal.SIGTERM)
        assert w.wait() == 0
    finally:
        w.stop()
    assert [json.loads(line) for line in w.out] == [
        {**a, "observed": float(a["observed"]), "baseline": float(a["baseline"]), "score": float(a["score"])}
        for a in raised]


def test_watch_alert_no_longer_listed(service, bus):
    """AlertRaised for an alert ListAlerts does not have: the signal's own fields are shown."""
    w = watch(bus, "--json")
    try:
        service.command({"signal_only": {"id": "gone-1", "kind": "fan_out", "subject": "device:00:16:3e:cc:00:01",
                                         "timestamp_usec": 1, "message": "not in the log"}})
        w.wait_line(lambda line: "gone-1" in line)
    finally:
        w.stop()
    assert json.loads(w.out[0]) == {"id": "gone-1", "kind": "fan_out", "subject": "device:00:16:3e:cc:00:01"}


def test_watch_as_member_and_as_outsider(service, bus):
    w = watch(bus, prefix=MEMBER)
    try:
        (alert,) = service.tick(new_devices=new_devices(1, start=300))
        w.wait_line(lambda line: f"  {alert['id']}  new_device  " in line)
    finally:
        w.stop()
    r = subprocess.run([*OUTSIDER, tool("netwatchctl"), "watch"], env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address),
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 4 and r.stderr.startswith(DENIED), r.stderr


def test_watch_without_daemon_or_bus(own_bus, tmp_path):
    r = bus_ctl(own_bus, "watch")
    assert r.returncode == 3 and r.stderr.startswith(NOT_RUNNING), r.stderr
    r = subprocess.run([tool("netwatchctl"), "watch"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/no-bus"))
    assert r.returncode == 3 and "cannot connect to the system bus" in r.stderr, r.stderr


def test_watch_follows_a_restart_of_the_daemon(own_bus, tmp_path):
    first = AlertService(own_bus, tmp_path / "first")
    w = None
    try:
        w = watch(own_bus)
        first.stop()
        w.wait_line("netwatchctl: netwatchd stopped; waiting for it to come back", stream="err")
        with AlertService(own_bus, tmp_path / "second") as second:
            w.wait_line("netwatchctl: netwatchd is back", stream="err")
            (alert,) = second.tick(new_devices=new_devices(1))
            w.wait_line(lambda line: f"  {alert['id']}  new_device  " in line and line.endswith(alert["message"]))
    finally:
        first.stop()
        if w is not None:
            w.stop()


def test_watch_ends_quietly_when_its_reader_goes(service, bus):
    """`netwatchctl watch | head -n 1`: the next alert meets a closed pipe; exit 0, no traceback."""
    w = LineProcess(["bash", "-c", f"set -o pipefail; {tool('netwatchctl')} watch | head -n 1"], bus)
    try:
        w.wait_line(WATCHING, stream="err")
        service.tick(new_devices=new_devices(1, start=400))
        w.wait_line(lambda line: "new_device" in line)
        service.tick(new_devices=new_devices(1, start=401))  # written into the closed pipe
        assert w.wait(15) == 0  # pipefail: netwatchctl's own exit status
    finally:
        w.stop()
    assert w.err == [WATCHING], w.err
