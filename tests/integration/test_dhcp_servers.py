"""Issue 23, DHCP servers, as root against the real kernel: a LAN of namespaces on a bridge
(tests/support/lan.py) with a legitimate DHCP server, a client and, later, a second server; a real
netwatchd on the SHIPPED config, only time compressed, inside a private journald.

`devices.interfaces` lists this LAN's ports (the key this module is about besides time): with
`auto` the bridge ports of other tests running on the same host would be watched too, and a DHCP
server of theirs would make "exactly one alert" a race.

  - the legitimate server answers the client's DISCOVER during the learning period: learnt, no
    alert;
  - after learning, a second server (another namespace) answers the client's DISCOVER too:
    exactly one `dhcp_server_new`, naming its MAC and IP and the router and DNS it offered;
  - the known server then hands out another router: exactly one `dhcp_server_change`, with the
    old and the new router.
The servers and the client are Python scripts here (a UDP socket on port 67 / 68 bound to the
namespace's eth0, SO_BROADCAST, to 255.255.255.255); what they sent is the ledger the alerts are
checked against. MESSAGE_ID and PRIORITY come from the README's table (tests/support/oracles.py).
"""
from __future__ import annotations

import json
import sys

import pytest

from tests.support.oracles import readme_alert_kinds

pytestmark = pytest.mark.root

TICK = 0.5
LEARNING_SEC = 6
LEGIT_MAC, CLIENT_MAC, ROGUE_MAC = "00:1b:21:d4:c0:01", "b8:27:eb:d4:c0:02", "00:16:3e:d4:c0:03"
LEGIT_ROUTER, CHANGED_ROUTER = "10.77.0.1", "10.77.0.254"
ROGUE_DNS = ["10.77.0.3", "9.9.9.9"]

# In a namespace: a DHCP server on eth0. Answers every DISCOVER with an OFFER broadcast to
# 255.255.255.255:68, from its own address (option 54), offering the router read from the file
# argv[2] at each answer (so the test can change it) and the DNS servers in argv[3] (commas).
SERVER = r"""
import socket, struct, sys
own, router_file, dns = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("0.0.0.0", 67))
print("ready", flush=True)
while True:
    q = s.recv(2048)
    if len(q) < 244 or q[0] != 1 or b"\x35\x01\x01" not in q[240:]:
        continue  # not a DISCOVER
    router = open(router_file).read().strip()
    opts = (b"\x35\x01\x02" + b"\x36\x04" + socket.inet_aton(own) + b"\x01\x04\xff\xff\xff\x00"
            + b"\x03\x04" + socket.inet_aton(router) + bytes([6, 4 * len(dns)]) + b"".join(map(socket.inet_aton, dns))
            + b"\x33\x04\x00\x00\x0e\x10" + b"\xff")
    reply = (bytes([2, 1, 6, 0]) + q[4:8] + b"\0" * 8 + socket.inet_aton("10.77.0.42") + socket.inet_aton(own)
             + b"\0" * 4 + q[28:236] + b"\x63\x82\x53\x63" + opts)
    s.sendto(reply, ("255.255.255.255", 68))
"""

# In a namespace: a DHCP client's DISCOVER from eth0 (chaddr argv[1]) to 255.255.255.255:67;
# prints, as JSON, the (server id, router) of every OFFER to it that came within a second.
CLIENT = r"""
import json, os, socket, sys, time
mac = bytes.fromhex(sys.argv[1].replace(":", ""))
xid = os.urandom(4)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("0.0.0.0", 68))
s.sendto(bytes([1, 1, 6, 0]) + xid + b"\0" * 20 + mac.ljust(16, b"\0") + b"\0" * 192 + b"\x63\x82\x53\x63"
         + b"\x35\x01\x01\x37\x03\x01\x03\x06\xff", ("255.255.255.255", 67))
offers, deadline = set(), time.monotonic() + 1.0
while time.monotonic() < deadline:
    s.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        r = s.recv(2048)
    except socket.timeout:
        break
    if r[0] == 2 and r[4:8] == xid:
        opts = r[240:]
        server = socket.inet_ntoa(opts[opts.index(b"\x36\x04") + 2:][:4])
        router = socket.inet_ntoa(opts[opts.index(b"\x03\x04") + 2:][:4])
        offers.add((server, router))
print(json.dumps(sorted(offers)))
"""


def broadcast_stays_on_eth0(w, node) -> None:
    """Before a broadcast: the namespace's route for it is its own eth0 (our veth, our bridge)."""
    route = w.lan.ns(node, "ip", "route", "get", "255.255.255.255", "oif", "eth0").stdout
    assert route.startswith("broadcast 255.255.255.255 dev eth0"), route


def discover(w) -> list:
    """The client's DISCOVER; the (server, router) offers it got."""
    broadcast_stays_on_eth0(w, w.client)
    return [tuple(o) for o in json.loads(w.lan.python(w.client, CLIENT, CLIENT_MAC))]


def start_server(w, node, router_file, dns) -> None:
    broadcast_stays_on_eth0(w, node)
    w.lan.start(node, sys.executable, "-c", SERVER, node.ipv4, str(router_file), ",".join(dns), ready="ready")


def kinds_of(w, kind: str) -> list:
    return [a for a in w.alerts() if a["kind"] == kind]


def latency_ticks(w, alert, mac: str, after_usec: int) -> float:
    """Ticks from the first tick that saw the reply of `mac` to the alert (1 = that same tick)."""
    seen = w.first_tick(after_usec, lambda t: any(r["server_mac"] == mac for r in t.dhcp_replies))
    return (alert["timestamp_usec"] - seen) / 1e6 / TICK + 1


@pytest.fixture(scope="module")
def world(make_world):
    """The LAN with its legitimate server learnt during the learning period; handed over once
    learning is over."""
    w = make_world("nwdh", journal=True)
    w.legit = w.lan.add_node("legit", LEGIT_MAC)
    w.client = w.lan.add_node("client", CLIENT_MAC)
    w.rogue = w.lan.add_node("rogue", ROGUE_MAC)
    w.router_file = w.tmp / "legit-router"
    w.router_file.write_text(LEGIT_ROUTER)
    start_server(w, w.legit, w.router_file, [w.legit.ipv4])
    w.start_daemon({"tick_interval_sec": TICK,
                    "alerts": {"learning_period_sec": LEARNING_SEC, "state_save_interval_sec": 1.0},
                    "devices": {"interfaces": w.lan.ports()}}, about=("devices.interfaces",))
    w.wait(lambda: set(w.lan.ports()) <= set(w.d.get_property("Interfaces")), 10, "the LAN's ports watched")
    assert w.d.get_property("Learning")
    assert discover(w) == [(w.legit.ipv4, LEGIT_ROUTER)]
    w.first_tick(0, lambda t: any(r["server_mac"] == LEGIT_MAC for r in t.dhcp_replies))
    assert w.d.get_property("Learning"), "the legitimate server must be seen while learning"
    w.wait(lambda: not w.d.get_property("Learning"), LEARNING_SEC + 10, "the learning period's end")
    return w


def test_a_second_server_answering_a_discover_is_one_dhcp_server_new(world):
    w = world
    assert kinds_of(w, "dhcp_server_new") == []  # the legitimate server, learnt silently
    since = w.ticks()[-1].time_usec
    rogue_router = w.tmp / "rogue-router"
    rogue_router.write_text(w.rogue.ipv4)  # the rogue offers itself as the gateway
    start_server(w, w.rogue, rogue_router, ROGUE_DNS)
    assert sorted(discover(w)) == [(w.legit.ipv4, LEGIT_ROUTER), (w.rogue.ipv4, w.rogue.ipv4)]
    alert = w.alert_for("dhcp_server_new", f"device:{ROGUE_MAC}")
    assert alert["details"] == {"mac": ROGUE_MAC, "ip": "10.77.0.3", "interface": w.rogue.port, "vlan": "0",
                                "router": "10.77.0.3", "dns": "10.77.0.3 9.9.9.9"}
    assert discover(w)  # it keeps answering: still one alert
    w.wait_ticks(alert["timestamp_usec"], 4)
    assert [a["subject"] for a in kinds_of(w, "dhcp_server_new")] == [f"device:{ROGUE_MAC}"]
    message_id, priority = readme_alert_kinds()["dhcp_server_new"]
    assert alert["priority"] == priority
    (entry,) = w.journal.wait_for(f"NETWATCHD_ALERT_ID={alert['id']}")
    assert (entry["MESSAGE_ID"], entry["NETWATCHD_ROUTER"], entry["NETWATCHD_MAC"]) == (message_id, "10.77.0.3",
                                                                                         ROGUE_MAC)
    print(f"dhcp_server_new latency: {latency_ticks(w, alert, ROGUE_MAC, since):.0f} ticks")


def test_the_known_server_handing_out_another_router_is_one_dhcp_server_change(world):
    w = world
    since = w.ticks()[-1].time_usec
    w.router_file.write_text(CHANGED_ROUTER)
    assert (w.legit.ipv4, CHANGED_ROUTER) in discover(w)
    alert = w.alert_for("dhcp_server_change", f"device:{LEGIT_MAC}")
    assert alert["details"] == {"mac": LEGIT_MAC, "ip": "10.77.0.1", "interface": w.legit.port, "vlan": "0",
                                "router": CHANGED_ROUTER, "dns": "10.77.0.1", "old_router": LEGIT_ROUTER,
                                "old_dns": "10.77.0.1"}
    assert discover(w)
    w.wait_ticks(alert["timestamp_usec"], 4)
    assert [a["subject"] for a in kinds_of(w, "dhcp_server_change")] == [f"device:{LEGIT_MAC}"]
    assert [a["subject"] for a in kinds_of(w, "dhcp_server_new")] == [f"device:{ROGUE_MAC}"]  # no more
    message_id, priority = readme_alert_kinds()["dhcp_server_change"]
    assert alert["priority"] == priority
    (entry,) = w.journal.wait_for(f"NETWATCHD_ALERT_ID={alert['id']}")
    assert (entry["MESSAGE_ID"], entry["NETWATCHD_OLD_ROUTER"]) == (message_id, LEGIT_ROUTER)
    print(f"dhcp_server_change latency: {latency_ticks(w, alert, LEGIT_MAC, since):.0f} ticks")
