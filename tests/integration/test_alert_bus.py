"""Alerts on the bus, against a real dbus-daemon with the project's policy: AlertRaised reaches root
and members of group netwatchd and nobody else; ListAlerts, its limits and fields; the Learning /
AlertCounts / AlertsRaised properties, also with alerting off.

The daemon is a stand-in (alert_service.py): the real ManagerInterface, DBusAlertSink and
AlertPipeline with its detector, minus BPF, so alerts are raised by ticks the test chooses -- on
the shipped thresholds, so each tick's figures are big enough to alert on the first tick a key
is seen (a burst: at least the kind's burst count and the cold rate).
"""
from __future__ import annotations

import json
import os
import signal
import time
from xml.etree import ElementTree

import pytest

from tests.conftest import require_bus_tools
from tests.integration.alert_bus_support import AlertService, new_devices
from tests.support.daemon import (BUS_NAME, INTERFACE, OBJECT_PATH, PrivateSystemBus, as_user, busctl,
                                  dbus_send_error, unvariant)
from tests.support.oracles import readme_alert_kinds
from tests.support.processes import LineProcess, Subscriber

pytestmark = pytest.mark.root

INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
MEMBER = as_user("nobody", "nogroup", ["netwatchd"])
OUTSIDER = as_user("nobody", "nogroup")
RECORD_TYPES = {"id": "s", "kind": "s", "subject": "s", "timestamp_usec": "t", "message": "s", "observed": "d",
                "baseline": "d", "score": "d", "priority": "i", "details": "a{ss}"}


@pytest.fixture(scope="module")
def service(bus, tmp_path_factory):
    require_bus_tools()
    with AlertService(bus, tmp_path_factory.mktemp("alert-state")) as s:
        # one of each kind and subject shape, then enough new devices to pass ListAlerts' default
        s.raised = s.tick(
            device_connects={"00:16:3e:aa:00:01": 1000}, device_new_ports={"00:16:3e:aa:00:02": 100},
            device_new_peers={"00:16:3e:aa:00:02": 3},
            command_connects={"nwstorm": 1000}, command_failed={"nwstorm": 999}, command_pids={"nwstorm": [4242]},
            address_changes=[{"ip": "10.9.9.9", "old_mac": "00:16:3e:aa:00:05", "new_mac": "00:16:3e:aa:00:06",
                              "flip_flop": False}])
        s.raised += s.tick(new_devices=new_devices(150))
        yield s


def call(bus, method: str, signature: str = "", *args):
    r = busctl(bus, "--json=short", "call", BUS_NAME, OBJECT_PATH, INTERFACE, method, signature, *map(str, args))
    return json.loads(r.stdout)["data"]


def get_property(bus, name: str):
    return json.loads(busctl(bus, "--json=short", "get-property", BUS_NAME, OBJECT_PATH, INTERFACE, name).stdout)["data"]


def list_alerts(bus, limit: int):
    (records,) = call(bus, "ListAlerts", "u", limit)
    return records


# -- ListAlerts ----------------------------------------------------------------------------------

def test_every_kind_was_raised(service):
    shapes = {(a["kind"], a["subject"].split(":")[0]) for a in service.raised}
    assert shapes == {("fan_out", "device"), ("connect_rate", "device"), ("connect_rate", "command"),
                      ("address_change", "ip"), ("new_device", "device")}
    assert len(service.raised) == 154


def test_records_have_every_field_with_its_type(service, bus):
    records = list_alerts(bus, 1000)
    assert [r["id"]["data"] for r in records] == [a["id"] for a in reversed(service.raised)]  # newest first
    for record, alert in zip(records, reversed(service.raised)):
        assert {k: v["type"] for k, v in record.items()} == RECORD_TYPES
        got = unvariant(record)
        assert got == {**alert, "observed": float(alert["observed"]), "baseline": float(alert["baseline"]),
                       "score": float(alert["score"])}
        assert got["priority"] == readme_alert_kinds()[got["kind"]][1]  # the README's PRIORITY
    storm = next(unvariant(r) for r in records if r["subject"]["data"] == "command:nwstorm")
    assert storm["kind"] == "connect_rate" and storm["observed"] == 1000.0 and storm["score"] > 0
    assert storm["details"] == {"command": "nwstorm", "failed": "999", "pids": "4242"}


@pytest.mark.parametrize("limit, expected", [(0, 100), (1, 1), (7, 7), (1000, 154)])
def test_limits(service, bus, limit, expected):
    records = list_alerts(bus, limit)
    assert [r["id"]["data"] for r in records] == [a["id"] for a in reversed(service.raised)][:expected]


def test_limit_above_1000_is_invalid_args(service, bus):
    assert dbus_send_error(bus, "ListAlerts", ["uint32:1001"]) == (INVALID_ARGS, "limit must be at most 1000, got 1001")


def test_properties(service, bus):
    counts = get_property(bus, "AlertCounts")
    # every kind of the README's table, 0 unless the service raised it
    raised = {"new_device": 150, "address_change": 1, "connect_rate": 2, "fan_out": 1}
    assert counts == {kind: raised.get(kind, 0) for kind in readme_alert_kinds()}
    assert get_property(bus, "AlertsRaised") == 154
    assert get_property(bus, "Learning") is False


# -- AlertRaised and who receives it ---------------------------------------------------------------

def test_alert_raised_reaches_root_and_members_only(service, bus):
    root, member, outsider = Subscriber(bus), Subscriber(bus, MEMBER), Subscriber(bus, OUTSIDER)
    try:
        raised = service.tick(new_devices=new_devices(2, start=1000))
        expected = [[a["id"], a["kind"], a["subject"]] for a in raised]
        assert [a["kind"] for a in raised] == ["new_device", "new_device"]
        assert root.signals_after_sync() == expected
        assert member.signals_after_sync() == expected
        # Delivered in order: had the bus passed AlertRaised on, it would precede "synced".
        assert outsider.signals_after_sync() == []
    finally:
        for s in (root, member, outsider):
            s.stop()


def test_outsiders_cannot_list_alerts_either(service, bus):
    assert dbus_send_error(bus, "ListAlerts", ["uint32:1"], prefix=OUTSIDER)[0] == ACCESS_DENIED
    assert dbus_send_error(bus, "ListAlerts", ["uint32:1"], prefix=MEMBER) == ("", "")


def test_busctl_monitor_sees_alert_raised(service, bus):
    monitor = LineProcess(["busctl", f"--address={bus.address}", "monitor", "--json=short", BUS_NAME], bus)
    try:
        # busctl monitor says nothing when it is set up: raise until it has seen one.
        deadline = time.monotonic() + 15
        while True:
            (alert,) = service.tick(new_devices=new_devices(1, start=int(time.monotonic() * 1000) % 60000 + 2000))
            try:
                i = monitor.wait_line(lambda line: f'"{alert["id"]}"' in line, timeout=0.5)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        message = json.loads(monitor.out[i])
        assert (message["type"], message["interface"], message["member"], message["path"]) == (
            "signal", INTERFACE, "AlertRaised", OBJECT_PATH)
        assert message["payload"] == {"type": "sss", "data": [alert["id"], "new_device", alert["subject"]]}
    finally:
        monitor.stop()


def test_signal_is_introspected_with_its_arguments(service, bus):
    xml = ElementTree.fromstring(busctl(bus, "introspect", "--xml-interface", BUS_NAME, OBJECT_PATH).stdout)
    (signal,) = xml.findall(f"interface[@name='{INTERFACE}']/signal[@name='AlertRaised']")
    assert [(a.get("name"), a.get("type")) for a in signal.findall("arg")] == [
        ("id", "s"), ("kind", "s"), ("subject", "s")]


# -- alerting off, learning: each on a bus of its own (the module's service owns the name) -------------

@pytest.fixture
def other_bus():
    require_bus_tools()
    with PrivateSystemBus() as b:
        yield b


@pytest.mark.parametrize("mode", ["disabled", "none"])
def test_alerting_off(other_bus, tmp_path, mode):
    """alerts.enabled: false, and a daemon without an alert pipeline at all."""
    with (AlertService(other_bus, tmp_path, {"alerts": {"enabled": False}}, about=("alerts.enabled",))
          if mode == "disabled" else AlertService(other_bus, tmp_path, alerting=False)) as s:
        if mode == "disabled":
            assert s.tick(new_devices=new_devices(3)) == []
        assert list_alerts(other_bus, 0) == []
        assert dbus_send_error(other_bus, "ListAlerts", ["uint32:1001"])[0] == INVALID_ARGS
        assert get_property(other_bus, "AlertCounts") == {}
        assert get_property(other_bus, "AlertsRaised") == 0
        assert get_property(other_bus, "Learning") is False


def test_learning(other_bus, tmp_path):
    with AlertService(other_bus, tmp_path, {"alerts": {"learning_period_sec": 3600}}) as s:
        assert get_property(other_bus, "Learning") is True
        assert s.tick(new_devices=new_devices(3)) == []  # learnt, not alerted
        assert get_property(other_bus, "AlertsRaised") == 0



def test_a_burst_while_the_bus_daemon_stalls_loses_no_signal_and_keeps_the_name(other_bus, tmp_path):
    """A scan's burst of signals while dbus-daemon is slow to read (a loaded host) fills the
    socket between them. That is a reason to wait, not to drop the connection: every AlertRaised
    arrives, in order, once the bus reads again, and the name is still ours."""
    burst = 2000
    with AlertService(other_bus, tmp_path) as s, Subscriber(other_bus) as root:
        os.kill(other_bus.proc.pid, signal.SIGSTOP)  # the bus daemon reads nothing for a while
        try:
            raised = s.tick(new_devices=new_devices(burst))
        finally:
            os.kill(other_bus.proc.pid, signal.SIGCONT)
        assert len(raised) == burst
        deadline = time.monotonic() + 60
        while len(got := root.signals_after_sync()) < burst and time.monotonic() < deadline:
            time.sleep(0.2)
        assert got == [[a["id"], a["kind"], a["subject"]] for a in raised]
        assert get_property(other_bus, "AlertsRaised") == burst
        assert len(list_alerts(other_bus, 1000)) == 1000
