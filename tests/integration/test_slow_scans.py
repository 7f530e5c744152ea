"""Slow scans (issue 23, scope 1) against the real kernel: a LAN of namespaces on a bridge
(tests/support/lan.py), `srv` with no listener on the scanned ports, and `scan` connecting to
40 of them, one every 0.5 s (20 s in all, well inside the shipped 300 s window, and one new port
a tick: never a fan_out or a connect_rate).

Exactly one `port_scan` on the scanner, raised in the tick whose probes brought srv's distinct
ports to 15 (alerts.scan_ports_per_host as shipped), naming srv's address, the count, the 300 s
window and sample ports; nothing else on the scanner; the journal entry carries the README's
MESSAGE_ID (tests/support/oracles.py).

The config is the shipped one with time compressed (the tick, the learning period, the save
intervals) and devices.interfaces, the LAN's ports, so that every device: subject is one of this
LAN's devices. alerts.scan_window_sec stays 300: the scan is fast enough for it.

Address sweeps (issue 23, scope 2): `sweep` runs `nmap -sn -n` of the LAN's /24 (ARP pings,
inside the LAN: the route is checked first) -> exactly one `address_sweep` on it, naming how
(arp), the count of addresses no known device uses, and the range; no fan_out or host_scan.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from typing import Dict, List

import pytest

from tests.support.lan import mac_tail
from tests.support.oracles import readme_alert_kinds
from tests.support.world import World

pytestmark = pytest.mark.root

TICK = 0.25
LEARNING_SEC = 4
SETTLE_TICKS = 8  # after the alert, this many processed ticks for a second one to show up
SCANNED_PORTS = list(range(2000, 2040))  # 40 ports, nothing listening on srv
EVERY_SEC = 0.5

# Inside the scanner's namespace: one TCP connect attempt to argv[1] on each port of argv[3:],
# every argv[2] seconds; prints the ledger (port -> errno name or "open").
SCANNER = r"""
import errno, json, socket, sys, time
host, every, ports = sys.argv[1], float(sys.argv[2]), [int(p) for p in sys.argv[3:]]
ledger, start = {}, time.monotonic()
for n, port in enumerate(ports):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2.0)
    code = s.connect_ex((host, port))
    ledger[port] = "open" if code == 0 else errno.errorcode.get(code, str(code))
    s.close()
    delay = start + (n + 1) * every - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(json.dumps({"ledger": ledger, "seconds": time.monotonic() - start}))
"""


@pytest.fixture(scope="module")
def world(make_world):
    """The LAN (srv, scan), in a private journal, and a daemon about devices.interfaces."""
    w = make_world("nwss", journal=True, tools=("nmap",))
    w.srv = w.lan.add_node("srv", f"00:1b:21:{mac_tail()}")
    w.scan = w.lan.add_node("scan", f"00:50:56:{mac_tail()}")
    w.sweep = w.lan.add_node("sweep", f"00:0c:29:{mac_tail()}")
    w.start_daemon({"tick_interval_sec": TICK,
                    "alerts": {"learning_period_sec": LEARNING_SEC, "state_save_interval_sec": 0.5},
                    "devices": {"interfaces": w.lan.ports(), "store_interval_sec": 0.5}},
                   about=("devices.interfaces",))
    deadline = time.monotonic() + 3 * LEARNING_SEC + 30
    while w.d.get_property("Learning"):  # nothing is counted while learning: scan after it
        assert time.monotonic() < deadline, "still learning"
        time.sleep(0.2)
    return w


def scanner_alerts(w: World, mac: str) -> List[Dict]:
    return [a for a in w.alerts() if a["subject"] == f"device:{mac}"]


def tick_of_the_15th_port(w: World, mac: str, host: str) -> int:
    """Time of the recorded tick whose probes brought the scanner's distinct ports of `host` to 15."""
    ports = set()
    for t in w.ticks():
        ports.update(p[1] for p in t.device_probes.get(mac, []) if p[0] == host and p[2] in ("tcp", "udp"))
        if len(ports) >= 15:
            return t.time_usec
    raise AssertionError(f"{mac} probed only {sorted(ports)} of {host}")


@pytest.mark.timeout(120)
def test_40_ports_at_one_every_half_second_are_exactly_one_port_scan(world):
    w = world
    route = w.lan.ns(w.scan, "ip", "route", "get", w.srv.ipv4).stdout
    assert "dev eth0" in route, route  # into our own LAN, nowhere else
    out = w.lan.python(w.scan, SCANNER, w.srv.ipv4, str(EVERY_SEC), *map(str, SCANNED_PORTS), timeout=90)
    ledger = json.loads(out)
    assert set(ledger["ledger"].values()) == {"ECONNREFUSED"} and len(ledger["ledger"]) == 40, ledger
    assert ledger["seconds"] < 300  # inside the shipped window

    w.wait(lambda: any(a["kind"] == "port_scan" for a in scanner_alerts(w, w.scan.mac)), timeout=30,
           what=f"port_scan on {w.scan.mac}")
    w.wait_ticks(max(a["timestamp_usec"] for a in scanner_alerts(w, w.scan.mac)), SETTLE_TICKS)
    alerts = scanner_alerts(w, w.scan.mac)
    assert [(a["kind"], a["subject"]) for a in alerts] == [("port_scan", f"device:{w.scan.mac}")], alerts
    (a,) = alerts
    d = a["details"]
    assert (d["mac"], d["host"], d["count"], d["window_sec"]) == (w.scan.mac, w.srv.ipv4, "15", "300")
    assert a["observed"] == 15.0 and a["baseline"] == 15.0
    assert d["ports"].split()[:3] == ["2000/tcp", "2001/tcp", "2002/tcp"]
    assert w.srv.ipv4 in a["message"] and "15 ports" in a["message"]
    # raised in the tick of the 15th port: latency 1 tick
    assert a["timestamp_usec"] == tick_of_the_15th_port(w, w.scan.mac, w.srv.ipv4)

    message_id, priority = readme_alert_kinds()["port_scan"]
    assert a["priority"] == priority == 4
    (entry,) = w.journal.wait_for(f"MESSAGE_ID={message_id}")
    assert entry["NETWATCHD_SUBJECT"] == f"device:{w.scan.mac}" and entry["NETWATCHD_HOST"] == w.srv.ipv4
    assert entry["PRIORITY"] == "4"


@pytest.mark.timeout(120)
def test_nmap_ping_sweep_of_the_lan_is_exactly_one_address_sweep(world):
    w = world
    subnet = w.srv.ipv4.rsplit(".", 1)[0]
    for last in (1, 200, 254):  # the whole /24 is this LAN's own: it goes out of eth0, onto our bridge
        route = w.lan.ns(w.sweep, "ip", "route", "get", f"{subnet}.{last}").stdout
        assert "dev eth0" in route and " via " not in route, route
    mark = time.time_ns() // 1000
    out = w.lan.ns(w.sweep, shutil.which("nmap") or "/usr/bin/nmap", "-sn", "-n", f"{subnet}.0/24", timeout=90).stdout
    assert "hosts up" in out, out
    mine = lambda: [a for a in scanner_alerts(w, w.sweep.mac) if a["timestamp_usec"] >= mark]  # noqa: E731
    w.wait(lambda: mine(), timeout=30, what=f"an alert on {w.sweep.mac}")
    w.wait_ticks(max(a["timestamp_usec"] for a in mine()), SETTLE_TICKS)
    alerts = mine()
    assert [(a["kind"], a["subject"]) for a in alerts] == [("address_sweep", f"device:{w.sweep.mac}")], alerts
    d = alerts[0]["details"]
    assert d["by"] == "arp" and d["mac"] == w.sweep.mac and d["window_sec"] == "300"
    assert int(d["count"]) >= 25 and int(d["count"]) == alerts[0]["observed"] and alerts[0]["baseline"] == 25.0
    known = {w.srv.ipv4, w.scan.ipv4, w.sweep.ipv4}  # answered for themselves: never counted
    assert not known & set(d["hosts"].split()), d
    assert d["first"].startswith(subnet + ".") and d["last"].startswith(subnet + "."), d
    message_id, priority = readme_alert_kinds()["address_sweep"]
    assert alerts[0]["priority"] == priority == 4
    (entry,) = w.journal.wait_for(f"MESSAGE_ID={message_id}")
    assert entry["NETWATCHD_SUBJECT"] == f"device:{w.sweep.mac}" and entry["NETWATCHD_BY"] == "arp"
