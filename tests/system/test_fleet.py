"""A fleet of three netwatchd hosts on one LAN, with a real Prometheus and a real Alertmanager
(tests/system/fleet_lab.py builds it: booted containers with the Debian package, one bridge).

What the hosts send Alertmanager (API v2): an alert's labels are `alertname` (Netwatchd + the
kind in CamelCase), `kind` and `severity`, plus `segment` and `mac` for a device (and no `host`:
one device seen by many hosts is one alert) or `host` (the machine-id) and `command` for a
command. Its annotations: `observers`, the sorted machine-ids of every host known to have seen
it (each re-send reads the alert back and adds its own), `observer_count`, `observer` (the
sender) and `summary`. Each host's metrics have `netwatchd_device_info{segment,mac,vendor}` and
`netwatchd_host_info{host,hostname,version}`.

In order, on one fleet:
  1. every daemon is active and Prometheus scrapes all three (`up` = 1); each reports its host;
  2. a device joins: every host's inventory has it; Alertmanager holds exactly one
     NetwatchdNewDevice alert for its MAC, without `host`, whose observers converge to the three
     machine-ids; Prometheus counts three device_info series for it;
  3. a connect storm in host 1 (a script of its own name, >= 3000 refused connects a second for
     6 s) is exactly one NetwatchdConnectRate alert, with host 1's machine-id and no other's;
  4. the device's alert is resolved after its lifetime (fleet.lifetime_sec.new_device, 30 s):
     the webhook gets the resolution no sooner than 25 s and no later than 50 s after the firing
     notification (checked before the outage below, which would hold a resolution back);
  5. Alertmanager stops; a second device joins; host 2's netwatchd restarts; 5 s later
     Alertmanager starts again on the same storage: within 15 s it holds exactly one alert for
     the second device, its observers converged to the three hosts.

Run: CI=true .venv/bin/python -m pytest tests/system/test_fleet.py -x -s -p no:cacheprovider  (root)
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, requires, require_tools
from tests.system.container import DEB_ROOTFS_PACKAGES, log, rootfs_tarball
from tests.system.fleet_lab import ALERTMANAGER, PROMETHEUS, Fleet, http_json, wait_for

# provisioning and booting three containers, on a cold cache minutes more: a timeout of its own
pytestmark = [pytest.mark.system, pytest.mark.timeout(1800)]

MACS = ("00:16:3e:fe:00:51", "00:16:3e:fe:00:52")  # universal (IEEE) MACs: one new_device alert each
DEVICE_ADDRESSES = ("10.252.0.51", "10.252.0.52")
NEW_DEVICE = "NetwatchdNewDevice"
CONNECT_RATE = "NetwatchdConnectRate"
# connect() to a closed port on 127.0.0.1, paced to RATE a second for SECONDS; prints what it did
STORM = r"""#!/usr/bin/python3 -IS
import json, socket, sys, time
seconds, rate = float(sys.argv[1]), int(sys.argv[2])
closed = socket.socket(); closed.bind(("127.0.0.1", 0))  # bound, not listening: refuses
port = closed.getsockname()[1]
t0, n = time.monotonic(), 0
while (now := time.monotonic()) - t0 < seconds:
    if n > (now - t0) * rate:
        time.sleep(0.002)
        continue
    for _ in range(50):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            pass
        s.close()
        n += 1
print(json.dumps({"connects": n, "seconds": time.monotonic() - t0}))
"""


@pytest.fixture(scope="module", autouse=True)
def module_clock():
    t0 = time.monotonic()
    yield
    print(f"\ntest_fleet.py: {time.monotonic() - t0:.0f}s for the module (the package build not included)")


@pytest.fixture(scope="module")
def fleet(deb, request):
    requires(os.geteuid() == 0, "needs root (systemd-nspawn, bridges, namespaces, BPF)")
    require_tools("systemd-nspawn", "mmdebstrap", "unshare", "nsenter", "tar", "zstd", "ip", "cp")
    for binary in (PROMETHEUS, ALERTMANAGER):
        requires(os.access(binary, os.X_OK), f"needs {binary} (Debian's prometheus and prometheus-alertmanager)")
    release = os.uname().release
    requires(os.path.exists(f"/lib/modules/{release}/build"),
             f"needs kernel headers at /lib/modules/{release}/build (make setup-test links them)")
    requires(" cgroup2 " in Path("/proc/self/mounts").read_text(), "needs a cgroup v2 hierarchy")
    t0 = time.monotonic()
    lab = Fleet(deb, rootfs_tarball(REPO, DEB_ROOTFS_PACKAGES))
    failed = request.session.testsfailed
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a CI timeout: clean up as after Ctrl-C
    try:
        lab.start()
        log(f"fleet ready in {time.monotonic() - t0:.1f}s: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in lab.timings.items()))
        yield lab
        if request.session.testsfailed > failed:
            lab.dump()
    except BaseException:
        lab.dump()
        raise
    finally:
        try:
            lab.cleanup()
        finally:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def one_alert(lab: Fleet, labels: dict, observers: list, since: float, what: str, timeout: float = 15) -> dict:
    """The one alert Alertmanager holds with `labels`, once its observers are `observers`: never
    two; there within `timeout` s of `since`, converged within `timeout` s more, and still one
    (the same) two resend intervals later."""
    seen = []

    def alerts():
        found = lab.am_alerts(**labels)
        assert len(found) <= 1, f"{len(found)} alerts for {labels}: {json.dumps(found, indent=1)}"
        seen[:] = found
        return found
    wait_for(alerts, since + timeout - time.monotonic(), f"an alert with {labels} in Alertmanager")
    appeared = time.monotonic() - since
    want = " ".join(sorted(observers))
    wait_for(lambda: alerts() and seen[0]["annotations"].get("observers") == want, timeout,
             f"the alert's observers to be {want} (last: {seen[0]['annotations'] if seen else None})")
    converged = time.monotonic() - since
    fingerprint = seen[0]["fingerprint"]
    time.sleep(2)  # two resend intervals of every host: a second alert (another segment?) would be there
    assert [a["fingerprint"] for a in alerts()] == [fingerprint], seen
    print(f"\nAlertmanager held the alert {appeared:.1f}s after {what}, its observers were all three "
          f"{converged:.1f}s after; labels {seen[0]['labels']}")
    return seen[0]


def assert_device_alert(alert: dict, mac: str, ids: list) -> None:
    labels, notes = alert["labels"], alert["annotations"]
    assert labels["alertname"] == NEW_DEVICE and labels["kind"] == "new_device" and labels.get("severity"), labels
    assert labels["mac"] == mac and labels.get("segment") and "host" not in labels, labels
    assert notes["observers"] == " ".join(sorted(ids)) and notes["observer_count"] == "3", notes
    assert notes["observer"] in ids and notes.get("summary"), notes


def in_every_inventory(lab: Fleet, mac: str, since: float, timeout: float = 15) -> float:
    """Seconds from `since` until every host's ListDevices has `mac`."""
    wait_for(lambda: all(mac in h.devices() for h in lab.hosts), timeout, f"{mac} in every host's ListDevices")
    return time.monotonic() - since


# ------------------------------------------------------------------------------ the tests
def test_every_daemon_is_active_and_prometheus_scrapes_all_three(fleet):
    assert [h.active() for h in fleet.hosts] == ["active"] * 3
    ids = [h.box.run(["cat", "/etc/machine-id"]).stdout.strip() for h in fleet.hosts]
    assert ids == [h.machine_id for h in fleet.hosts] and len(set(ids)) == 3, ids
    want = {f"{h.address}:9637": "1" for h in fleet.hosts}
    t0 = time.monotonic()
    wait_for(lambda: {r["metric"]["instance"]: r["value"][1] for r in fleet.prom('up{job="netwatchd"}')} == want,
             30, f"up{{job=\"netwatchd\"}} = 1 for {sorted(want)}")
    status = http_json(f"{fleet.alertmanager.url}/api/v2/status")
    assert status["versionInfo"]["version"].startswith("0.25"), status["versionInfo"]
    print(f"\nPrometheus scraped all three {time.monotonic() - t0:.1f}s after it was ready; Alertmanager "
          f"{status['versionInfo']['version']} answers")


def test_each_host_reports_its_identity(fleet):
    want = {f"{h.address}:9637": (h.machine_id, h.box.name) for h in fleet.hosts}
    got = {}

    def identities():
        got.clear()
        got.update({r["metric"]["instance"]: (r["metric"].get("host"), r["metric"].get("hostname"))
                    for r in fleet.prom('netwatchd_host_info{job="netwatchd"} == 1')})
        return got == want
    wait_for(identities, 15, f"netwatchd_host_info of each host to be {want} (last: {got})")


def test_a_joining_device_is_one_alert_every_host_observed(fleet):
    mac, ids = MACS[0], [h.machine_id for h in fleet.hosts]
    device = fleet.lan.add_device(mac, DEVICE_ADDRESSES[0])
    joined = time.monotonic()
    device.join()
    fleet.notes["first_device"] = mac
    print(f"\n{mac} in every host's inventory {in_every_inventory(fleet, mac, joined):.1f}s "
          "after it joined")
    alert = one_alert(fleet, {"alertname": NEW_DEVICE, "mac": mac}, ids, joined, "the device joined")
    assert_device_alert(alert, mac, ids)
    query = f'count by (mac) (netwatchd_device_info{{mac="{mac}"}})'
    wait_for(lambda: [r["value"][1] for r in fleet.prom(query)] == ["3"], 15, f"{query} = 3")


def test_a_connect_storm_on_one_host_is_one_alert_naming_that_host(fleet):
    host = fleet.hosts[0]
    name = f"stormer{secrets.token_hex(2)}"  # unique: every host's tracepoints see every connect
    host.box.write_file(f"/usr/local/bin/{name}", STORM)
    host.box.run(["chmod", "755", f"/usr/local/bin/{name}"])
    # a transient unit, so the storm runs in the container's cgroup like any of its services
    argv = ["nsenter", "-t", str(host.box.pid1), "-a", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"/usr/local/bin/{name}", "6", "4000"]
    labels = {"alertname": CONNECT_RATE, "command": name}
    t0 = time.monotonic()
    storm = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: fleet.am_alerts(**labels), 25, f"a {CONNECT_RATE} alert for {name}")
        raised = time.monotonic() - t0
    finally:
        out, err = storm.communicate(timeout=60)
    assert storm.returncode == 0, err
    ran = json.loads(out.strip().splitlines()[-1])
    rate = ran["connects"] / ran["seconds"]
    print(f"\n{name}: {ran['connects']} connects in {ran['seconds']:.1f}s ({rate:.0f}/s); "
          f"{CONNECT_RATE} in Alertmanager {raised:.1f}s after the storm began")
    assert rate >= 3000, ran
    time.sleep(3)  # three resend intervals: a host that alerts too would have sent by now
    alerts = fleet.am_alerts(**labels)
    assert len(alerts) == 1 and alerts[0]["labels"].get("host") == host.machine_id, json.dumps(alerts, indent=1)
    assert alerts[0]["labels"]["kind"] == "connect_rate" and alerts[0]["labels"].get("severity"), alerts[0]
    for other in fleet.hosts[1:]:
        assert fleet.am_alerts(alertname=CONNECT_RATE, command=name, host=other.machine_id) == [], other.box.name
    fleet.notes["storm"] = name


def test_the_device_alert_is_resolved_after_its_lifetime(fleet):
    """fleet.lifetime_sec.new_device is 30 s: the resolution reaches the webhook between 25 and 50
    s after the firing notification."""
    mac = fleet.notes.get("first_device")
    assert mac, "no device joined (test_a_joining_device_is_one_alert_every_host_observed did not run)"
    fired = fleet.webhook.alerts("firing", alertname=NEW_DEVICE, mac=mac)
    assert fired, f"the webhook got no firing notification for {mac}"
    t_fired = min(t for t, _ in fired)
    left = t_fired + 50 - time.monotonic()
    resolved = wait_for(lambda: fleet.webhook.alerts("resolved", alertname=NEW_DEVICE, mac=mac), max(left, 0),
                        f"the resolution of {mac}'s alert within 50 s of its firing notification")
    after = min(t for t, _ in resolved) - t_fired
    print(f"\n{mac}: resolved notification {after:.1f}s after the firing one")
    assert after >= 25, f"resolved {after:.1f}s after firing: before its lifetime (30 s) was over"
    storm = fleet.notes.get("storm")
    if storm:
        fired = fleet.webhook.alerts("firing", alertname=CONNECT_RATE, command=storm)
        done = fleet.webhook.alerts("resolved", alertname=CONNECT_RATE, command=storm)
        if fired and done:
            after = min(t for t, _ in done) - min(t for t, _ in fired)
            print(f"{storm}: resolved {after:.1f}s after firing (fleet.lifetime_sec.connect_rate: 20 s)")


def test_an_alertmanager_outage_and_a_daemon_restart_lose_no_alert(fleet):
    mac, ids = MACS[1], [h.machine_id for h in fleet.hosts]
    fleet.alertmanager.stop()
    try:
        device = fleet.lan.add_device(mac, DEVICE_ADDRESSES[1])
        joined = time.monotonic()
        device.join()
        print(f"\nAlertmanager stopped; {mac} in every host's inventory {in_every_inventory(fleet, mac, joined):.1f}s "
              f"after it joined")
        restarted = fleet.hosts[1].restart()
        assert fleet.hosts[1].active() == "active"
        assert mac in fleet.hosts[1].devices(), "the restarted host forgot the device"
        print(f"netwatchd on {fleet.hosts[1].box.name} restarted in {restarted:.1f}s")
        time.sleep(5)  # the outage goes on: not a wait for a condition
    finally:
        fleet.alertmanager.start()
    back = time.monotonic()
    alert = one_alert(fleet, {"alertname": NEW_DEVICE, "mac": mac}, ids, back, "Alertmanager was back")
    assert_device_alert(alert, mac, ids)
    print(f"phases: {json.dumps({k: round(v, 1) for k, v in fleet.timings.items()})}", file=sys.stdout)
