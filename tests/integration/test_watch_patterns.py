"""`netwatchctl watch --patterns` against a real daemon watching a namespace LAN: a device that
sends UDP to a port it never used before shows up as one line (one JSON object with --json)
within seconds, from the TC classifier's pattern event through the PatternSeen signal."""
from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import tool
from tests.support.processes import LineProcess
from tests.support.world import two_devices

pytestmark = pytest.mark.root

WATCHING = "netwatchctl: watching for new patterns (Ctrl-C to stop)"
NEW_PORT = 7411  # nothing listens there: the device's first datagram to it is the new pattern


@pytest.fixture(scope="module")
def world(make_world):
    return two_devices(make_world("nwp"))


def udp(world, port: int, count: int = 1) -> None:
    world.lan.send_udp(world.pc, [f"{world.srv.ipv4}:{port}"], count)


def watcher(world, *args: str) -> LineProcess:
    w = LineProcess([tool("netwatchctl"), "watch", "--patterns", *args], world.bus)
    w.wait_line(WATCHING, stream="err", timeout=30)  # subscribed: nothing signalled from here on is missed
    return w


def is_new_port(line: str) -> bool:
    return line.startswith("{") and json.loads(line)["port"] == NEW_PORT


def test_a_new_peer_port_is_one_json_line_within_seconds(world):
    w = watcher(world, "--json")
    try:
        udp(world, NEW_PORT, count=3)
        first = w.wait_line(is_new_port, timeout=5)
        pattern = json.loads(w.out[first])
        assert {k: v for k, v in pattern.items() if k != "timestamp_usec"} == {
            "mac": world.pc.mac, "peer": world.srv.ipv4, "port": NEW_PORT, "transport": "udp", "name": ""}
        assert pattern["timestamp_usec"] > 0
        udp(world, NEW_PORT, count=2)  # the same pattern again: not new, no second line
        udp(world, NEW_PORT + 1)  # a fresh one, as a marker that everything before it arrived
        w.wait_line(lambda line: line.startswith("{") and json.loads(line)["port"] == NEW_PORT + 1, timeout=5)
        assert sum(is_new_port(line) for line in w.out) == 1, w.out
    finally:
        w.signal(signal.SIGTERM)  # by pid
        assert w.wait() == 0
    assert w.err == [WATCHING]


def test_the_human_line_names_device_peer_port_and_transport(world):
    w = watcher(world)
    try:
        udp(world, NEW_PORT + 2)
        i = w.wait_line(lambda line: f"{world.srv.ipv4}:{NEW_PORT + 2}" in line, timeout=5)
        fields = w.out[i].split()
        assert fields[2:] == [world.pc.mac, "udp", f"{world.srv.ipv4}:{NEW_PORT + 2}", "-"], w.out[i]
    finally:
        w.stop()
    assert w.proc.returncode == 0
