"""The shipped `devices.interfaces: auto`, with exact counts: a daemon of this module's own
(nothing but time compressed) on a LAN of two namespaces on a bridge watches every port and not
the bridge (a frame between two devices crosses the ports, never the master) or lo, and counts
a device's datagrams exactly once. A module of its own: a second netwatchd beside another one's
clsact filters would remove them (a start removes netwatchd's leftover filters by name)."""
from __future__ import annotations

import sys
import time

import pytest

from tests.conftest import require_root_and_bcc, require_tools
from tests.harness import DaemonProcess, PrivateSystemBus, unvariant
from tests.integration.lan import UDP_ECHO, Lan

pytestmark = pytest.mark.root

TICK = 0.2
ECHO_PORT = 7000


@pytest.fixture(scope="module")
def world():
    require_root_and_bcc()
    require_tools("ip", "dbus-daemon", "busctl")
    lan = Lan()
    try:
        with PrivateSystemBus() as bus:
            lan.create_bridge()
            pi = lan.add_node("pi", "b8:27:eb:5a:11:01")
            srv = lan.add_node("srv", "00:1b:21:5a:11:02")
            lan.start(srv, sys.executable, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
            with DaemonProcess(bus, {"tick_interval_sec": TICK}) as d:
                yield lan, d, pi, srv
    finally:
        lan.cleanup()
        assert not lan.leftovers(), "the LAN was not removed"


def devices(d: DaemonProcess) -> dict:
    return {r["mac"]: r for r in map(unvariant, d.call("ListDevices")[0])}


def tx_udp(d: DaemonProcess, mac: str) -> int:
    return devices(d).get(mac, {}).get("counters", {}).get("tx_udp_packets", 0)


def test_auto_watches_the_ports_not_the_bridge_and_counts_exactly_once(world):
    lan, d, pi, srv = world
    deadline = time.monotonic() + 10
    while not set(lan.ports()) <= set(d.get_property("Interfaces")):  # ports appear within a tick
        assert time.monotonic() < deadline, d.get_property("Interfaces")
        time.sleep(TICK)
    watched = set(d.get_property("Interfaces"))
    assert lan.bridge not in watched and "lo" not in watched, watched
    sent = lan.send_udp(pi, [f"{srv.ipv4}:{ECHO_PORT}"], 29, echo=True)
    assert sent.packets == 29
    deadline = time.monotonic() + 10
    while tx_udp(d, pi.mac) < 29 and time.monotonic() < deadline:
        time.sleep(TICK)
    time.sleep(3 * TICK)  # a few ticks more: a frame counted twice (port and bridge) would show now
    dev = devices(d)[pi.mac]
    assert dev["counters"]["tx_udp_packets"] == 29 and dev["counters"]["rx_udp_packets"] == 29, dev["counters"]
    assert dev["interface"] == pi.port
