"""DNS anomalies per device (issue 23, scope 4) against the real kernel: a LAN of namespaces on a
bridge (tests/support/lan.py), a resolver in `srv` that answers NXDOMAIN for every name
(tests.support.lan.DNS_SERVER with no records), and two devices asking it:

- `dga` resolves 200 made-up names within a minute, each answered NXDOMAIN: exactly one
  `dns_nxdomain_burst` on it, no `dns_tunnel`;
- `tun` asks 50 names with a 60-character random label under one domain: exactly one
  `dns_tunnel` on it naming that domain (its 50 NXDOMAIN stay below the burst's count).

The config is the shipped one with time compressed, and devices.interfaces (the LAN's ports, so
that every device: subject is one of this LAN's devices and the host's own DNS cannot add to
them). The expected values are written out here; MESSAGE_IDs come from the README's table
(tests/support/oracles.py). Senders are paced at 40 lookups a second (80 snippets: a query and
its answer), well under devices.snippet_budget_per_sec (256 a second per CPU).
"""
from __future__ import annotations

import json
import random
import string
import sys
import time
from typing import Dict, List

import pytest

from tests.support.lan import DNS_SERVER, mac_tail
from tests.support.oracles import readme_alert_kinds
from tests.support.world import World

pytestmark = pytest.mark.root

TICK = 0.25
LEARNING_SEC = 4
SETTLE_TICKS = 8  # after the expected alert, this many processed ticks for a second one to show up
DNS_PORT = 53
PACE_PER_SEC = 40

# Inside a device's namespace: each name of argv[3:] (or read from stdin) asked once to
# argv[1]:argv[2], waiting for its answer; prints how many answers came back with each RCODE
# (the test's own ledger).
CLIENT = r"""
import json, os, socket, struct, sys, time
server, port, pace = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
names = sys.stdin.read().split()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0)
rcodes = {}
start = time.monotonic()
for n, name in enumerate(names):
    ident = (n + 1) & 0xFFFF
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    s.sendto(struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1), (server, port))
    while True:
        try:
            answer = s.recv(4096)
        except socket.timeout:
            rcodes["timeout"] = rcodes.get("timeout", 0) + 1
            break
        if struct.unpack("!H", answer[:2])[0] == ident:
            rcode = str(struct.unpack("!H", answer[2:4])[0] & 0xF)
            rcodes[rcode] = rcodes.get(rcode, 0) + 1
            break
    delay = start + (n + 1) / pace - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(json.dumps({"rcodes": rcodes, "seconds": time.monotonic() - start}))
"""


@pytest.fixture(scope="module")
def world(make_world):
    """The LAN (srv: the resolver; dga, tun: the devices) and a daemon about devices.interfaces."""
    w = make_world("nwdn")
    w.srv = w.lan.add_node("srv", f"00:1b:21:{mac_tail()}")
    w.dga = w.lan.add_node("dga", f"00:25:90:{mac_tail()}")
    w.tun = w.lan.add_node("tun", f"00:16:3e:{mac_tail()}")
    w.lan.start(w.srv, sys.executable, "-c", DNS_SERVER, str(DNS_PORT), json.dumps({}), ready="ready")
    w.start_daemon({"tick_interval_sec": TICK,
                    "alerts": {"learning_period_sec": LEARNING_SEC, "state_save_interval_sec": 0.5},
                    "devices": {"interfaces": w.lan.ports(), "store_interval_sec": 0.5}},
                   about=("devices.interfaces",))
    deadline = time.monotonic() + 3 * LEARNING_SEC + 30
    while w.d.get_property("Learning"):  # nothing alerts while learning: send after it
        assert time.monotonic() < deadline, "still learning"
        time.sleep(0.2)
    return w


def lookups(w: World, node, names: List[str]) -> Dict:
    route = w.lan.ns(node, "ip", "route", "get", w.srv.ipv4).stdout
    assert "dev eth0" in route, route  # into our own LAN, nowhere else
    out = w.lan.python(node, CLIENT, w.srv.ipv4, str(DNS_PORT), str(PACE_PER_SEC), stdin="\n".join(names),
                       timeout=120)
    return json.loads(out)


def dns_alerts(w: World, mac: str) -> List[Dict]:
    return [a for a in w.alerts() if a["kind"].startswith("dns_") and a["subject"] == f"device:{mac}"]


def settled_alerts(w: World, mac: str, kind: str) -> List[Dict]:
    """The device's DNS alerts once one of `kind` is there and SETTLE_TICKS more were processed."""
    w.wait(lambda: any(a["kind"] == kind for a in dns_alerts(w, mac)), timeout=30, what=f"{kind} on {mac}")
    w.wait_ticks(max(a["timestamp_usec"] for a in dns_alerts(w, mac)), SETTLE_TICKS)
    return dns_alerts(w, mac)


def threshold_tick(w: World, mac: str, count, threshold: int) -> int:
    """Time of the recorded tick in which the device's running `count` (of a tick's dns_activity
    entry) reached `threshold`: the tick the alert belongs to."""
    total = 0
    for t in w.ticks():
        total += count(t.dns_activity.get(mac, {}))
        if total >= threshold:
            return t.time_usec
    raise AssertionError(f"{mac} never reached {threshold}: {total}")


def nxdomain_count(fact: Dict) -> int:
    return sum(fact.get("nxdomain", {}).values()) + fact.get("nxdomain_over", 0)


def tunnel_count(domain: str):
    return lambda fact: fact.get("names", {}).get(domain, [0, 0, 0])[1]


def test_200_nxdomain_answers_in_a_minute_are_one_dns_nxdomain_burst(world):
    w = world
    rng = random.Random(23)
    names = ["".join(rng.choice(string.ascii_lowercase) for _ in range(14)) + ".example" for _ in range(200)]
    ledger = lookups(w, w.dga, names)
    assert ledger["rcodes"] == {"3": 200} and ledger["seconds"] < 60, ledger  # 200 NXDOMAIN within a minute
    alerts = settled_alerts(w, w.dga.mac, "dns_nxdomain_burst")
    assert [(a["kind"], a["subject"]) for a in alerts] == [("dns_nxdomain_burst", f"device:{w.dga.mac}")], alerts
    (a,) = alerts
    assert a["details"]["mac"] == w.dga.mac and a["details"]["window_sec"] == "60"
    assert int(a["details"]["count"]) >= 100 and a["baseline"] == 100.0
    assert a["priority"] == readme_alert_kinds()["dns_nxdomain_burst"][1]
    # raised in the tick whose answers brought the count to alerts.dns_nxdomain_answers (100)
    assert a["timestamp_usec"] == threshold_tick(w, w.dga.mac, nxdomain_count, 100)


def test_50_long_random_labels_under_one_domain_are_one_dns_tunnel(world):
    w = world
    rng = random.Random(4)
    domain = f"nw{w.tag}.example"
    names = ["".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(60)) + "." + domain
             for _ in range(50)]
    ledger = lookups(w, w.tun, names)
    assert sum(ledger["rcodes"].values()) == 50 and "timeout" not in ledger["rcodes"], ledger
    alerts = settled_alerts(w, w.tun.mac, "dns_tunnel")
    assert [(a["kind"], a["subject"], a["details"]["domain"]) for a in alerts] == [
        ("dns_tunnel", f"device:{w.tun.mac}", domain)], alerts
    (a,) = alerts
    assert a["details"]["longest_label"] == "60" and int(a["details"]["count"]) >= 30 and a["baseline"] == 30.0
    assert a["priority"] == readme_alert_kinds()["dns_tunnel"][1]
    # raised in the tick whose names brought the count to alerts.dns_tunnel_names (30)
    assert a["timestamp_usec"] == threshold_tick(w, w.tun.mac, tunnel_count(domain), 30)
