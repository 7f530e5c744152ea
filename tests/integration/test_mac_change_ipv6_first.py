"""A device changing its MAC whose first frames are IPv6 (MLD and NDP on link-up) and whose IPv4
follows 2 s later is one `address_change`, never a `new_device` as well (issue 23, item 5: the
note of issue 10 saw both in 1 run of 3). Ten devices of a LAN of our own each change their MAC
once -- ten runs, each on an address of its own (a second change of one address would fall in
its cooldown) -- on the shipped config with only time compressed. A new MAC seen by IPv6 alone
is held IPV6_FIRST_HOLD_SEC (4 s, README "What raises which alert") for its IPv4 to move."""
from __future__ import annotations

import sys
import time

import pytest

from tests.support.lan import UDP_ECHO, mac_tail

pytestmark = pytest.mark.root

TICK = 0.5
LEARNING_SEC = 6
ECHO_PORT = 7000
MOVERS = 10
IPV4_AFTER_SEC = 2.0
HOLD_SEC = 4  # the README's hold for a MAC seen by IPv6 alone


@pytest.fixture(scope="module")
def world(make_world):
    w = make_world("nw6f")
    srv = w.lan.add_node("srv", "00:1b:21:" + mac_tail())
    w.lan.start(srv, sys.executable, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
    movers = [w.lan.add_node(f"m{i}", "00:16:3e:" + mac_tail()) for i in range(MOVERS)]
    w.start_daemon({"tick_interval_sec": TICK, "alerts": {"learning_period_sec": LEARNING_SEC},
                    "devices": {"store_interval_sec": 0.5}})
    for node in movers:  # each known by both addresses before it changes its MAC
        route = w.lan.ns(node, "ip", "route", "get", srv.ipv4).stdout
        assert "dev eth0" in route, route  # into our own LAN, nowhere else
        w.lan.send_udp(node, [f"{srv.ipv4}:{ECHO_PORT}", f"[{srv.ipv6}]:{ECHO_PORT}"], 1, echo=True)
    w.wait(lambda: all({n.ipv4} <= set(w.devices().get(n.mac, {}).get("ipv4", [])) and
                       n.ipv6 in w.devices().get(n.mac, {}).get("ipv6", []) for n in movers),
           timeout=20, what="every mover known by its IPv4 and IPv6 address")
    w.wait(lambda: w.d.get_property("Learning") is False, timeout=LEARNING_SEC + 20, what="the end of learning")
    w.movers, w.srv = movers, srv
    return w


def change_mac_ipv6_first(w, node) -> str:
    """The new MAC's first frames are IPv6 (the kernel's MLD/DAD for its new link-local address,
    then NDP for srv's IPv6 from the kept global address); its IPv4 (ARP) 2 s later."""
    new = "00:16:3e:" + mac_tail()
    w.lan.ns(node, "ip", "link", "set", "eth0", "address", new)  # the kernel forgets its neighbours
    w.lan.send_udp(node, [f"[{w.srv.ipv6}]:{ECHO_PORT}"], 1)
    time.sleep(IPV4_AFTER_SEC)
    w.lan.send_udp(node, [f"{w.srv.ipv4}:{ECHO_PORT}"], 1)
    node.mac = new
    return new


def test_ten_mac_changes_with_ipv6_first_are_ten_address_changes_and_no_new_device(world):
    w = world
    old = {n.name: n.mac for n in w.movers}
    mark = time.time_ns() // 1000
    new = {n.name: change_mac_ipv6_first(w, n) for n in w.movers}
    ours = {n.ipv4 for n in w.movers} | {n.ipv6 for n in w.movers}

    def changes():
        return [a for a in w.alerts() if a["timestamp_usec"] >= mark and a["kind"] == "address_change"
                and a["details"]["ip"] in ours]
    w.wait(lambda: len(changes()) >= MOVERS, timeout=30, what=f"{MOVERS} address_change alerts")
    w.wait_ticks(time.time_ns() // 1000, int((HOLD_SEC + 2) / TICK))  # the hold has run out for every new MAC
    got = sorted((a["subject"], a["details"]["old_mac"], a["details"]["new_mac"]) for a in changes())
    assert got == sorted((f"ip:{n.ipv4}", old[n.name], new[n.name]) for n in w.movers)
    new_devices = [a for a in w.alerts() if a["timestamp_usec"] >= mark and a["kind"] == "new_device"
                   and a["details"]["mac"] in set(new.values())]
    assert new_devices == []
