"""Alerts to a real Alertmanager (issue 25), as root: one daemon on the shipped config (time
compressed: tick 0.5 s, learning 0, fleet.resend_interval_sec 0.5, fleet.lifetime_sec.new_device
8 s; about fleet.alertmanager_urls), a namespace LAN, a real journald and Debian's
prometheus-alertmanager on loopback.

- a device joins: Alertmanager holds one NetwatchdNewDevice for it, labelled by segment and MAC
  only, its annotations naming this host as the observer; the journal entry carries the same ids;
- Alertmanager stopped, a device joins, the daemon restarts, Alertmanager comes back: the alert
  is delivered from the spool, once; the failure was counted by cause;
- the lifetime ends: the alert is resolved in Alertmanager;
- the journal uploaded (systemd-journal-upload) to a systemd-journal-remote on loopback: the
  alert is found there by the README's ids (NETWATCHD_HOST_ID, NETWATCHD_MAC);
- an Alertmanager that takes connections and never answers: ticks and D-Bus answers go on, the
  other one still gets the alert, the hung request is counted as a timeout.
The many-host fleet (three booted containers, Prometheus) is tests/system/test_fleet.py."""
from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import require_tools
from tests.support.alertmanager import BINARY, Alertmanager, free_port
from tests.support.lan import mac_tail

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

TICK = 0.5
LIFETIME = 8


@pytest.fixture(scope="module")
def fleet(make_world):
    """The world, its Alertmanager, and a daemon about devices.interfaces (the LAN's ports only)
    and fleet.alertmanager_urls (the test's Alertmanager)."""
    require_tools(BINARY)
    w = make_world("nwf", journal=True)
    am = Alertmanager().start()
    try:
        w.am = am
        w.lan.add_node("first", "00:1b:21:" + mac_tail(), down=True)
        w.lan.add_node("second", "b8:27:eb:" + mac_tail(), down=True)
        w.lan.add_node("third", "00:0c:29:" + mac_tail(), down=True)
        w.start_daemon(config(w), about=("devices.interfaces", "fleet.alertmanager_urls"))
        yield w
    finally:
        am.cleanup()


def config(w, urls=()):
    return {"tick_interval_sec": TICK, "alerts": {"learning_period_sec": 0},
            "devices": {"interfaces": w.lan.ports()},
            "fleet": {"alertmanager_urls": list(urls) or [w.am.url], "resend_interval_sec": 0.5,
                      "lifetime_sec": {"new_device": LIFETIME}}}


def join(w, name: str) -> str:
    node = w.node(name)
    other = w.node("second" if name == "first" else "first")
    w.lan.ns(node, "ip", "link", "set", "eth0", "up")
    w.lan.send_udp(node, [f"{other.ipv4}:9"], 3)  # sent from the node's namespace: only its /24 is routed
    return node.mac


def status(w) -> dict:
    import json

    return json.loads(w.ctl("status", "--json").stdout)


def new_device_alerts(w, mac: str):
    return w.am.alerts(alertname="NetwatchdNewDevice", mac=mac)


def test_a_new_device_is_one_alert_labelled_by_segment_and_mac(fleet):
    w = fleet
    host = status(w)["HostId"]
    assert len(host) == 32 and host == Path("/etc/machine-id").read_text().strip()
    mac = join(w, "first")
    alerts = w.wait(lambda: new_device_alerts(w, mac), 15, "the new device's alert in Alertmanager")
    assert len(alerts) == 1
    labels, notes = alerts[0]["labels"], alerts[0]["annotations"]
    # a port of the LAN's bridge: the bridge's segment; it has no IPv4 either: this host's own
    assert labels == {"alertname": "NetwatchdNewDevice", "kind": "new_device", "severity": "info",
                      "segment": f"{host}/{w.lan.bridge}", "mac": mac}
    assert (notes["observer"], notes["observers"], notes["observer_count"]) == (host, host, "1")
    assert notes["message_id"] == "4703ce0acd5240cbb57e9708c958357a" and mac in notes["summary"]
    entry = w.journal.wait_for("NETWATCHD_KIND=new_device", f"NETWATCHD_MAC={mac}")[0]
    assert (entry["NETWATCHD_HOST_ID"], entry["NETWATCHD_SEGMENT"]) == (host, labels["segment"])
    fleet_line = next(line for line in w.ctl("status").stdout.splitlines() if "Fleet:" in line)
    assert "dropped" in fleet_line and "delivered" in fleet_line


JOURNAL_REMOTE, JOURNAL_UPLOAD = "/lib/systemd/systemd-journal-remote", "/lib/systemd/systemd-journal-upload"


def test_the_journal_collected_by_journal_remote_finds_the_alert_by_its_ids(fleet):
    """README "A fleet": systemd-journal-upload -> systemd-journal-remote, then one journalctl
    over the collected record with the ids the labels carry."""
    w = fleet
    require_tools(JOURNAL_REMOTE, JOURNAL_UPLOAD)
    host, mac = status(w)["HostId"], w.node("first").mac
    collected = Path(tempfile.mkdtemp(prefix="nwd-remote-"))
    port = free_port()
    remote = subprocess.Popen([JOURNAL_REMOTE, f"--listen-http=127.0.0.1:{port}", "--split-mode=none",
                               f"--output={collected / 'remote.journal'}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        w.wait(lambda: w.journal.run(JOURNAL_UPLOAD, f"--url=http://127.0.0.1:{port}", "--merge", "--follow=no",
                                     check=False, timeout=30).returncode == 0, 10, "journal-upload to journal-remote")
        query = ["journalctl", "--no-pager", "-o", "json", "-D", str(collected), "NETWATCHD_KIND=new_device",
                 f"NETWATCHD_MAC={mac}"]
        entries = w.wait(lambda: [json.loads(line) for line in subprocess.run(
            query + [f"NETWATCHD_HOST_ID={host}"], capture_output=True, text=True).stdout.splitlines()], 10,
            "the alert in the collected journal")
        assert len(entries) == 1 and entries[0]["MESSAGE_ID"] == "4703ce0acd5240cbb57e9708c958357a"
        assert entries[0]["NETWATCHD_SEGMENT"] == f"{host}/{w.lan.bridge}"
    finally:
        remote.terminate()
        remote.wait(10)
        subprocess.run(["rm", "-rf", str(collected)], check=False)


def test_an_alert_raised_while_alertmanager_is_away_arrives_once_after_a_restart(fleet):
    """Restarted on the same devices.interfaces and fleet.alertmanager_urls during the outage."""
    w = fleet
    w.am.stop()
    mac = join(w, "second")
    w.alert_for("new_device", f"device:{mac}")
    failed = w.wait(lambda: [k for k in status(w)["FleetDelivery"] if k.startswith(f"failed {w.am.url} ")], 10,
                    "a failed request counted")
    assert failed == [f"failed {w.am.url} connection refused"]
    w.d.stop()  # restarted during the outage: the spool holds the alert
    w.start_daemon(config(w), about=("devices.interfaces", "fleet.alertmanager_urls"))
    w.am.start()
    alerts = w.wait(lambda: new_device_alerts(w, mac), 15, "the spooled alert delivered")
    assert len(alerts) == 1
    time.sleep(3 * 0.5)  # three re-sends later: still one alert
    assert len(new_device_alerts(w, mac)) == 1
    assert f"Alertmanager {w.am.url} takes alerts again" in w.daemon_log()


def test_the_alert_is_resolved_when_its_lifetime_ends(fleet):
    w = fleet
    mac = w.node("first").mac
    first = new_device_alerts(w, mac)
    assert first, "the first device's alert is still there"
    w.wait(lambda: not new_device_alerts(w, mac), LIFETIME + 10, "the alert resolved")


def test_an_alertmanager_that_never_answers_delays_no_tick_and_no_bus_answer(fleet):
    """A reload about fleet.alertmanager_urls (and the same devices.interfaces) adds a second URL:
    a socket that accepts connections and never reads them (fleet.timeout_sec, 10 s as shipped,
    ends each request)."""
    w = fleet
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes the handshakes; nobody ever answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        w.d.reload(config(w, urls=[w.am.url, url]), about=("devices.interfaces", "fleet.alertmanager_urls"))
        mac = join(w, "third")
        w.alert_for("new_device", f"device:{mac}")  # raised: its post to the silent one hangs now
        since = len(w.d.notify.messages)
        answers = []
        for _ in range(8):
            t0 = time.monotonic()
            w.d.get_property("ConnectAttempts")  # busctl; the daemon reads the kernel to answer
            answers.append(time.monotonic() - t0)
            time.sleep(0.25)
        ticks = sum(1 for m in w.d.notify.messages[since:] for line in m.split("\n") if line.startswith("STATUS="))
        assert max(answers) < 1.0, f"D-Bus answers took {answers}"
        assert ticks >= 4, f"{ticks} ticks in ~3 s of 0.5 s ticks while a request hung"
        # the healthy one got it at once: its courier does not wait for the hung one's
        w.wait(lambda: new_device_alerts(w, mac), 3, "the alert at the Alertmanager that answers")
        w.wait(lambda: f"failed {url} timeout" in status(w)["FleetDelivery"], 15, "the hung request counted")
    finally:
        silent.close()
