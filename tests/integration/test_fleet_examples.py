"""The fleet examples (issue 25) hold up under the tools that will read them: examples/fleet/
prometheus.yml and its rules.yml pass promtool (the rules' own unit tests, rules_test.yml,
included); examples/fleet/alertmanager.yml passes amtool, routes each of netwatchd's alerts by its
scope (amtool config routes test), and its inhibit rules mute what they say, and only that, in a
real Alertmanager. No root, no daemon: promtool (prometheus), amtool and prometheus-alertmanager
(prometheus-alertmanager) are needed, and under CI=true their absence fails (tests.conftest.requires).

The oracle is netwatchd's alert label contract, written out below: alertname is Netwatchd and the
kind in CamelCase; LAN-scope alerts (a device) carry segment and mac, no host; host-scope alerts
(a command) carry host and command; a beacon adds destination.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.request

import pytest
import yaml

from tests.conftest import REPO, require_tools
from tests.support import wait_for

FLEET = "examples/fleet"
ALERTMANAGER_YML = f"{FLEET}/alertmanager.yml"

# (alertname, kind): every alert netwatchd posts.
ALERTS = [
    ("NetwatchdNewDevice", "new_device"),
    ("NetwatchdAddressChange", "address_change"),
    ("NetwatchdConnectRate", "connect_rate"),
    ("NetwatchdFanOut", "fan_out"),
    ("NetwatchdBeacon", "beacon"),
    ("NetwatchdMacFlood", "mac_flood"),
    ("NetwatchdDhcpServerNew", "dhcp_server_new"),
    ("NetwatchdDhcpServerChange", "dhcp_server_change"),
    ("NetwatchdDnsNxdomainBurst", "dns_nxdomain_burst"),
    ("NetwatchdDnsTunnel", "dns_tunnel"),
    ("NetwatchdPortScan", "port_scan"),
    ("NetwatchdHostScan", "host_scan"),
    ("NetwatchdAddressSweep", "address_sweep"),
]
# Kinds the README names with a command subject (connect_rate, beacon on command:<name>).
HOST_SCOPE_KINDS = {"connect_rate", "beacon"}


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)


def lan_labels(alertname: str, kind: str) -> dict:
    labels = {"alertname": alertname, "kind": kind, "severity": "warning", "segment": "seg-a"}
    if kind != "mac_flood":
        labels["mac"] = "02:00:00:00:00:01"
    if kind == "address_change":
        labels["ip"] = "192.0.2.7"
    if kind == "beacon":
        labels["destination"] = "203.0.113.5:443"
    return labels


def host_labels(alertname: str, kind: str) -> dict:
    labels = {"alertname": alertname, "kind": kind, "severity": "warning", "host": "m1", "command": "curl"}
    if kind == "beacon":
        labels["destination"] = "203.0.113.5:443"
    return labels


# ------------------------------------------------------------------------------------ promtool
def test_prometheus_config_is_valid_and_loads_the_rules():
    require_tools("promtool")
    r = run("promtool", "check", "config", f"{FLEET}/prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "SUCCESS: 1 rule files found" in out
    assert f"Checking {FLEET}/rules.yml" in out  # rule_files is relative to prometheus.yml
    assert "SUCCESS: 5 rules found" in out


def test_rules_are_valid():
    require_tools("promtool")
    r = run("promtool", "check", "rules", f"{FLEET}/rules.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 5 rules found" in r.stdout


def test_rules_pass_their_unit_tests():
    """HostDown fires after 5m with the host's machine-id, not for a healthy host; CaptureDegraded
    fires with host and path while the counter grows, not when flat; 3 observers are counted."""
    require_tools("promtool")
    r = run("promtool", "test", "rules", f"{FLEET}/rules_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "FAILED" not in r.stdout


def test_the_unit_tests_catch_an_alert_without_host(tmp_path):
    """rules_test.yml checks the joined host label: the rules with it left out of the join fail."""
    require_tools("promtool")
    rules = (REPO / FLEET / "rules.yml").read_text()
    assert rules.count("group_left(host, hostname)") == 3
    (tmp_path / "rules.yml").write_text(rules.replace("group_left(host, hostname)", "group_left(hostname)"))
    shutil.copy(REPO / FLEET / "rules_test.yml", tmp_path / "rules_test.yml")
    r = subprocess.run(["promtool", "test", "rules", "rules_test.yml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    for alertname in ("NetwatchdHostDown", "NetwatchdCaptureDegraded", "NetwatchdAlertsDropped"):
        assert f"alertname: {alertname}" in r.stdout + r.stderr


# ------------------------------------------------------------------------------------ amtool
def test_alertmanager_config_is_valid():
    require_tools("amtool")
    r = run("amtool", "check-config", ALERTMANAGER_YML)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    assert " - 2 inhibit rules" in r.stdout
    assert " - 4 receivers" in r.stdout


def route(labels: dict, receiver: str) -> subprocess.CompletedProcess:
    return run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}",
               f"--verify.receivers={receiver}", *(f"{k}={v}" for k, v in labels.items()))


ROUTE_CASES = (
    [pytest.param(lan_labels(a, k), "beacons" if k == "beacon" else "lan", id=f"lan-{k}") for a, k in ALERTS]
    + [pytest.param(host_labels(a, k), "beacons" if k == "beacon" else "hosts", id=f"host-{k}")
       for a, k in ALERTS if k in HOST_SCOPE_KINDS]
    + [
        # rules.yml's: a host's problem goes with its host, a target never seen to the default.
        pytest.param({"alertname": "NetwatchdCaptureDegraded", "severity": "warning", "host": "m1",
                      "path": "device", "instance": "host1.example:9637"}, "hosts", id="rules-capture-degraded"),
        pytest.param({"alertname": "NetwatchdHostDown", "severity": "critical", "instance": "host3.example:9637",
                      "job": "netwatchd"}, "default", id="rules-host-down-never-seen"),
        pytest.param({"alertname": "SomethingElse"}, "default", id="other"),
    ]
)


@pytest.mark.parametrize("labels,receiver", ROUTE_CASES)
def test_each_alert_goes_to_its_scope_receiver(labels, receiver):
    require_tools("amtool")
    r = route(labels, receiver)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == receiver


def test_a_wrong_receiver_is_reported():
    """The routing assertions can fail: amtool exits 1 when the receiver is not the one expected."""
    require_tools("amtool")
    r = route(lan_labels("NetwatchdNewDevice", "new_device"), "hosts")
    assert r.returncode == 1
    assert r.stdout.strip().splitlines()[0] == "lan"


def test_alertmanager_yml_routes_and_inhibit_rules_as_documented():
    config = yaml.safe_load((REPO / ALERTMANAGER_YML).read_text())
    top = config["route"]
    assert (top["receiver"], top["group_wait"], top["group_interval"], top["repeat_interval"]) == \
        ("default", "30s", "5m", "4h")
    assert [(r["receiver"], r["matchers"], r["group_by"]) for r in top["routes"]] == [
        ("beacons", ['kind="beacon"'], ["alertname", "destination"]),
        ("lan", ['segment=~".+"'], ["segment", "kind"]),
        ("hosts", ['host=~".+"'], ["host", "kind"]),
    ]
    assert config["receivers"] == [{"name": n} for n in ("default", "beacons", "lan", "hosts")]
    degraded, address_change = config["inhibit_rules"]
    assert degraded["source_matchers"] == ['alertname=~"NetwatchdCaptureDegraded|NetwatchdHostDown"']
    assert degraded["target_matchers"] == ['alertname=~"Netwatchd.+"', 'kind=~".+"', 'host=~".+"']
    assert degraded["equal"] == ["host"]
    assert address_change["source_matchers"] == ['kind="address_change"']
    assert address_change["target_matchers"] == ['kind="new_device"']
    assert address_change["equal"] == ["segment", "mac"]
    target = re.compile(r'Netwatchd.+')
    assert all(target.fullmatch(a) for a, _ in ALERTS)  # every alertname can be a target


# ------------------------------------------------------------------------------------ a live Alertmanager
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def alertmanager(tmp_path):
    """A real Alertmanager on examples/fleet/alertmanager.yml, clustering off, on loopback."""
    require_tools("prometheus-alertmanager")
    base = f"http://127.0.0.1:{free_port()}"
    log = (tmp_path / "alertmanager.log").open("w")
    proc = subprocess.Popen(["prometheus-alertmanager", f"--config.file={REPO / ALERTMANAGER_YML}",
                             f"--storage.path={tmp_path / 'data'}", f"--web.listen-address={base[7:]}",
                             "--cluster.listen-address="], stdout=log, stderr=subprocess.STDOUT)
    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
        try:
            with urllib.request.urlopen(base + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, timeout=20, what="Alertmanager ready",
                 detail=lambda: (tmp_path / "alertmanager.log").read_text())
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def post(base: str, alerts: list) -> None:
    body = json.dumps([{"labels": labels} for labels in alerts]).encode()
    req = urllib.request.Request(base + "/api/v2/alerts", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def states(base: str) -> dict:
    with urllib.request.urlopen(base + "/api/v2/alerts", timeout=10) as r:
        alerts = json.load(r)
    return {tuple(sorted(a["labels"].items())): a["status"]["state"] for a in alerts}


def key(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


def test_inhibit_rules_mute_what_they_say_and_only_that(alertmanager):
    degraded = {"alertname": "NetwatchdCaptureDegraded", "severity": "warning", "host": "m1",
                "hostname": "host1", "instance": "host1.example:9637", "job": "netwatchd", "path": "device"}
    # A target never seen has no host: were the target's host=~".+" missing, equal: [host] would
    # hold ("" = "") and this would mute every LAN-scope alert.
    never_seen = {"alertname": "NetwatchdHostDown", "severity": "critical",
                  "instance": "host3.example:9637", "job": "netwatchd"}
    scan_m1 = host_labels("NetwatchdConnectRate", "connect_rate")
    scan_m2 = {**scan_m1, "host": "m2"}
    dropped_m1 = {"alertname": "NetwatchdAlertsDropped", "severity": "warning", "host": "m1",
                  "hostname": "host1", "instance": "host1.example:9637", "job": "netwatchd"}
    moved = lan_labels("NetwatchdAddressChange", "address_change")
    new_moved = lan_labels("NetwatchdNewDevice", "new_device")
    new_other = {**new_moved, "mac": "02:00:00:00:00:02"}
    beacon_lan = lan_labels("NetwatchdBeacon", "beacon")
    flood = lan_labels("NetwatchdMacFlood", "mac_flood")
    post(alertmanager, [degraded, never_seen, scan_m1, scan_m2, dropped_m1, moved, new_moved, new_other,
                        beacon_lan, flood])
    # Alertmanager hands alerts to its inhibitor in the order posted: once this later pair is
    # muted, every source above has been seen.
    sentinel_source = {**moved, "mac": "02:00:00:00:00:99"}
    sentinel = {**new_moved, "mac": "02:00:00:00:00:99"}
    post(alertmanager, [sentinel_source, sentinel])
    wait_for(lambda: states(alertmanager)[key(sentinel)] == "suppressed", timeout=20,
             what="the sentinel new_device muted", detail=lambda: str(states(alertmanager)))
    got = states(alertmanager)
    suppressed = {k for k, state in got.items() if state == "suppressed"}
    assert suppressed == {key(scan_m1), key(new_moved), key(sentinel)}, got
    assert len(got) == 12 and set(got.values()) == {"active", "suppressed"}
