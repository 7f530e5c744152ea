"""The shipped `devices.interfaces: auto`, with exact counts: a daemon of this module's own
(nothing but time compressed) on a LAN of two namespaces on a bridge watches every port and not
the bridge (a frame between two devices crosses the ports, never the master) or lo, and counts
a device's datagrams exactly once; nor a tun interface (no Ethernet headers), which named in
devices.interfaces is a config error. A module of its own: a second netwatchd beside another
one's clsact filters would remove them (a start removes netwatchd's leftover filters by name)."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import requires, tool
from tests.support.daemon import DaemonProcess, unvariant
from tests.support.lan import UDP_ECHO

pytestmark = pytest.mark.root

TICK = 0.2
ECHO_PORT = 7000


@pytest.fixture(scope="module")
def world(make_world):
    w = make_world("nwauto")
    pi = w.lan.add_node("pi", "b8:27:eb:5a:11:01")
    srv = w.lan.add_node("srv", "00:1b:21:5a:11:02")
    w.lan.start(srv, sys.executable, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
    return w.lan, w.start_daemon({"tick_interval_sec": TICK}), pi, srv


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


def test_auto_passes_over_a_tun_and_naming_it_is_a_config_error(world):
    """A tun carries IP packets without Ethernet headers: `auto` never attaches to it, and
    devices.interfaces naming it is rejected by --check-config and by a reload (the running
    configuration stays), with the file, the key and the reason."""
    requires(os.path.exists("/dev/net/tun"), "needs /dev/net/tun")
    lan, d, _, _ = world
    tun = f"nwtun{secrets.token_hex(3)}"
    try:
        subprocess.run(["ip", "tuntap", "add", "dev", tun, "mode", "tun"], check=True, timeout=30)
        subprocess.run(["ip", "link", "set", "dev", tun, "up"], check=True, timeout=30)
        # iproute2's own word for its link type, the oracle for the message's "(type 65534 none)"
        assert "link/none" in subprocess.run(["ip", "-o", "link", "show", "dev", tun], capture_output=True,
                                             text=True, check=True, timeout=30).stdout
        # A port added after the tun: once the watcher has it, its refresh has seen the tun too.
        late = lan.add_node("late", "02:00:00:5a:11:09")
        deadline = time.monotonic() + 10
        while late.port not in d.get_property("Interfaces"):
            assert time.monotonic() < deadline, d.get_property("Interfaces")
            time.sleep(TICK)
        assert tun not in d.get_property("Interfaces")
        status = subprocess.run([tool("netwatchctl"), "status"], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": d.bus.address})
        (line,) = [x for x in status.stdout.splitlines() if x.strip().startswith("Interfaces:")]
        assert late.port in line and tun not in line

        problem = (f"devices.interfaces[0]: {tun} is not an Ethernet interface (type 65534 none): "
                   "the device watcher reads Ethernet headers")
        d.write_config({"tick_interval_sec": TICK, "devices": {"interfaces": [tun]}}, about=("devices.interfaces",))
        r = subprocess.run([tool("netwatchd"), "--check-config", str(d.config_path)], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert (r.returncode, r.stdout, r.stderr) == (78, "", f"netwatchd: {d.config_path}: {problem}\n")

        since = len(d.notify.messages)
        d.signal(signal.SIGHUP)
        d.notify.wait_line("READY=1", d.notify.wait_line("RELOADING=1", since) + 1)
        expected = f"reload rejected, keeping the running configuration: {d.config_path}: {problem}"
        deadline = time.monotonic() + 10
        while expected not in d.log():
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.1)
        assert late.port in d.get_property("Interfaces")  # still `auto`
    finally:
        d.write_config({"tick_interval_sec": TICK})
        subprocess.run(["ip", "link", "del", "dev", tun], capture_output=True, timeout=30)
