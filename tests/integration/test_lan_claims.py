"""README claims about the device watcher, against the real kernel: a LAN of network namespaces
on a bridge (tests/support/lan.py), a real netwatchd on its ports, real clients.

- devices.capture_dns, devices.capture_tls, devices.capture_dhcp off (by a reload): no names from
  dig, openssl s_client or udhcpc; on again, the same clients' names show (so the check can fail).
- VLAN-tagged frames (802.1Q, `eth0.5` in a namespace): the device is listed with its vlan and
  exact UDP counts.
- ProtocolTotals equals the sum over ListDevices per protocol, both directions.
- `netwatchctl watch --patterns` names the DNS name a device looked the peer up by.
- PatternSeen reaches root and group netwatchd, and no one else.
- devices.max_devices overflow: the devices beyond it are not listed; what the loss counts.

The config is the shipped one with time compressed, except the keys these tests are about:
devices.interfaces (the LAN's ports, so the host's own devices cannot disturb exact counts),
devices.max_devices (16, the smallest accepted) and the capture switches.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Dict

import pytest

from tests.conftest import require_bus_tools, tool
from tests.support import frames
from tests.support.daemon import as_user
from tests.support.lan import DNS_SERVER, UDP_ECHO, Node
from tests.support.processes import LineProcess, Subscriber
from tests.support.world import World

pytestmark = pytest.mark.root

TICK = 0.2
MAX_DEVICES = 16
VLAN_ID = 5
VLAN_PREFIX = "10.77.5."  # inside the tagged frames only: no interface has these addresses
ECHO_PORT, DISCARD_PORT, DNS_PORT, TLS_PORT = 7000, 9, 53, 8443
ABOUT = ("devices.interfaces", "devices.max_devices", "devices.capture_dns", "devices.capture_tls",
         "devices.capture_dhcp")


@pytest.fixture(scope="module")
def world(make_world):
    """The LAN (cli, srv running the servers, vl behind a VLAN tag) and a daemon about ABOUT."""
    w = make_world("nwlc", tools=("dig", "openssl", "busybox", "setpriv"))
    w.cli = w.lan.add_node("cli", "00:00:0c:5b:22:01")
    w.srv = w.lan.add_node("srv", "00:1b:21:5b:22:02")
    w.vl = w.lan.add_node("vl", "b8:27:eb:5b:22:03")
    vlanize(w)
    start_servers(w)
    w.start_daemon(config(w), about=ABOUT)
    w.lan.send_udp(w.cli, [f"{w.srv.ipv4}:{ECHO_PORT}"], 1, echo=True)  # ARP settled
    return w


def vlanize(w: World) -> None:
    """`vl` sends only 802.1Q-tagged frames, written raw on its eth0 (this host's kernel has
    no 8021q module for an eth0.5): no address and no IPv6 on eth0, so it sends nothing
    untagged of its own (what it sent while being set up went out before the daemon started)."""
    w.lan.ns(w.vl, "ip", "addr", "flush", "dev", "eth0")
    w.lan.ns(w.vl, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1")


def start_servers(w: World) -> None:
    lan, srv, py = w.lan, w.srv, sys.executable
    cert, key = w.tmp / "cert.pem", w.tmp / "key.pem"
    lan.ns(srv, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=lan.test", "-days", "1")
    records = {name: {"A": srv.ipv4} for name in ("off.lan.test", "on.lan.test", "app.lan.test")}
    lan.start(srv, py, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
    lan.start(srv, py, "-c", DNS_SERVER, str(DNS_PORT), json.dumps(records), ready="ready")
    lan.start(srv, "openssl", "s_server", "-accept", f"0.0.0.0:{TLS_PORT}", "-cert", str(cert), "-key", str(key),
              "-www", "-quiet")
    lan.wait_tcp(srv, TLS_PORT)


def config(w: World, capture: bool = True) -> Dict:
    return {"tick_interval_sec": TICK,
            "devices": {"interfaces": w.lan.ports(), "store_interval_sec": 0.5, "max_devices": MAX_DEVICES,
                        "capture_dns": capture, "capture_tls": capture, "capture_dhcp": capture}}


def client(w: World, node: Node, *argv: str) -> str:
    r = w.lan.ns(node, *argv, check=False, timeout=30)
    assert r.returncode == 0, f"{argv}: {r.stdout}{r.stderr}"
    return r.stdout + r.stderr


def count(dev: Dict, name: str) -> int:
    return dev.get("counters", {}).get(name, 0)


# -- privacy switches ------------------------------------------------------------------------------

def use_clients(w: World, tag: str) -> Dict:
    """dig, openssl s_client and udhcpc in `cli`, each naming something with `tag`; cli's record
    once the daemon has counted their frames (so their names had every chance to be taken)."""
    before = w.devices()[w.cli.mac]
    srv = w.srv
    assert client(w, w.cli, "dig", f"@{srv.ipv4}", f"{tag}.lan.test", "A", "+short", "+tries=1",
                    "+time=5").split() == [srv.ipv4]
    out = client(w, w.cli, "openssl", "s_client", "-connect", f"{srv.ipv4}:{TLS_PORT}", "-servername",
                   f"tls-{tag}.lan.test", "-brief")
    assert "CONNECTION ESTABLISHED" in out, out
    w.lan.ns(w.cli, "busybox", "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", "2", "-T", "1", "-s", "/bin/true",
             "-x", f"hostname:nw-{tag}", check=False, timeout=20)
    # dig's query and answer, and two DHCPDISCOVERs at least; the TLS connection's SYN
    return w.wait_devices(lambda ds: count(ds[w.cli.mac], "tx_udp_packets") >= count(before, "tx_udp_packets") + 3
                          and ds[w.cli.mac]["tcp_syns"] > before["tcp_syns"])


def test_capture_dns_tls_dhcp_off_keep_names_out_and_on_again_let_them_in(world):
    """devices.capture_dns, devices.capture_tls and devices.capture_dhcp false (a reload): none
    of dig's name, openssl's server name, udhcpc's hostname is kept -- nor the hostname the DNS
    answer would give srv. Switched on again, the same clients' names are there."""
    w = world
    w.d.reload(config(w, capture=False))
    devs = use_clients(w, "off")
    cli, srv = devs[w.cli.mac], devs[w.srv.mac]
    assert (cli["dns_names"], cli["tls_names"], cli["hostname"]) == ([], [], ""), cli
    assert srv["hostname"] == "", srv

    w.d.reload(config(w, capture=True))
    use_clients(w, "on")
    devs = w.wait_devices(lambda ds: ds[w.cli.mac]["hostname"] == "nw-on" and ds[w.cli.mac]["tls_names"])
    cli, srv = devs[w.cli.mac], devs[w.srv.mac]
    assert cli["dns_names"] == ["on.lan.test"], cli
    assert cli["tls_names"] == ["tls-on.lan.test"], cli
    assert (cli["hostname"], cli["hostname_source"]) == ("nw-on", "dhcp"), cli
    assert (srv["hostname"], srv["hostname_source"]) == ("on.lan.test", "dns"), srv


# -- VLAN ------------------------------------------------------------------------------------------

def tagged_udp(src: Node, dst: Node, n: int, size: int):
    """n UDP datagrams from src to dst's discard port, each an 802.1Q-tagged frame (VLAN 5)."""
    src_ip = f"{VLAN_PREFIX}3"
    datagram = frames.ipv4(src_ip, f"{VLAN_PREFIX}2", 17, frames.udp(40000, DISCARD_PORT, bytes(size)))
    frame = frames.eth(dst.mac, src.mac, 0x8100, frames.vlan(VLAN_ID, 0x0800, datagram))
    return [frame] * n


def test_a_device_behind_an_802_1q_tag_is_listed_with_its_vlan_and_exact_udp_counts(world):
    """Tagged frames on the wire (802.1Q, VLAN 5, IPv4/UDP inside): the device is listed with
    vlan 5 and exactly the datagrams and bytes it sent. The receiving kernel moves the tag into
    the packet's metadata before TC sees it, so a frame counts as Ethernet + IPv4 + UDP +
    payload, without the tag's 4 bytes (what an interface's own counters say too)."""
    w, vl = world, world.vl
    assert w.lan.send_frames(vl, tagged_udp(vl, w.srv, 1, 10)) == 1
    before = w.wait_devices(lambda ds: vl.mac in ds)[vl.mac]
    assert before["vlan"] == VLAN_ID, before
    size, n = 61, 23
    assert w.lan.send_frames(vl, tagged_udp(vl, w.srv, n, size)) == n
    dev = w.wait_devices(lambda ds: count(ds[vl.mac], "tx_udp_packets") >= count(before, "tx_udp_packets") + n)[vl.mac]
    assert (dev["vlan"], dev["interface"]) == (VLAN_ID, vl.port), dev
    assert count(dev, "tx_udp_packets") == 1 + n, dev["counters"]
    assert count(dev, "tx_udp_bytes") == (1 + n) * 14 + (20 + 8) * (1 + n) + 10 + n * size, dev["counters"]
    assert {k for k, v in dev["counters"].items() if v and k.startswith("tx_")} == {"tx_udp_packets", "tx_udp_bytes"}
    srv = w.devices()[w.srv.mac]
    assert srv["vlan"] == 0, srv  # srv spoke untagged first
    assert count(srv, "rx_udp_packets") >= 1 + n


# -- ProtocolTotals --------------------------------------------------------------------------------

def test_protocol_totals_is_the_sum_over_list_devices(world):
    w = world
    w.lan.send_udp(w.cli, [f"{w.srv.ipv4}:{DISCARD_PORT}"], 11)
    for _ in range(20):  # a moment when nothing moved between the two listings
        first = w.devices()
        totals = w.d.get_property("ProtocolTotals")
        if w.devices() == first:
            break
        time.sleep(TICK / 2)
    else:
        raise AssertionError("the LAN never stood still for one tick")
    expected: Dict[str, int] = {}
    for dev in first.values():
        for key, value in dev["counters"].items():
            direction, protocol, unit = key.split("_", 2) if key.count("_") >= 2 else ("", "", "")
            if direction in ("tx", "rx") and unit == "packets":
                expected[protocol] = expected.get(protocol, 0) + value
    assert {p: n for p, n in totals.items() if n} == {p: n for p, n in expected.items() if n}
    assert set(expected) <= set(totals), totals
    assert totals["udp"] >= 11 and totals["arp"] > 0, totals


# -- PatternSeen: netwatchctl watch --patterns, and who receives it ----------------------------------

WATCHING = "netwatchctl: watching for new patterns (Ctrl-C to stop)"


def test_watch_patterns_names_the_dns_name_the_device_looked_the_peer_up_by(world):
    w, srv = world, world.srv
    port = 7421
    watch = LineProcess([tool("netwatchctl"), "watch", "--patterns", "--json"], w.bus)
    human = LineProcess([tool("netwatchctl"), "watch", "--patterns"], w.bus)
    try:
        watch.wait_line(WATCHING, stream="err", timeout=30)
        human.wait_line(WATCHING, stream="err", timeout=30)
        assert client(w, w.cli, "dig", f"@{srv.ipv4}", "app.lan.test", "A", "+short", "+tries=1",
                        "+time=5").split() == [srv.ipv4]
        w.wait_devices(lambda ds: "app.lan.test" in ds[w.cli.mac]["dns_names"])
        w.lan.send_udp(w.cli, [f"{srv.ipv4}:{port}"], 2)
        i = watch.wait_line(lambda line: line.startswith("{") and json.loads(line)["port"] == port, timeout=5)
        pattern = json.loads(watch.out[i])
        assert {k: v for k, v in pattern.items() if k != "timestamp_usec"} == {
            "mac": w.cli.mac, "peer": srv.ipv4, "port": port, "transport": "udp", "name": "app.lan.test"}
        j = human.wait_line(lambda line: f"{srv.ipv4}:{port}" in line, timeout=5)
        assert human.out[j].split()[2:] == [w.cli.mac, "udp", f"{srv.ipv4}:{port}", "app.lan.test"], human.out[j]
    finally:
        watch.stop()
        human.stop()


def test_pattern_seen_reaches_root_and_members_and_is_withheld_from_outsiders(world):
    require_bus_tools()
    w, srv = world, world.srv
    port = 7431
    subscribers = {who: Subscriber(w.bus, prefix, member="PatternSeen") for who, prefix in (
        ("root", None), ("member", as_user("nobody", "nogroup", ["netwatchd"])), ("outsider", as_user("nobody", "nogroup")))}
    try:
        w.lan.send_udp(srv, [f"{w.cli.ipv4}:{port}"], 3)  # srv looked up no name: ""
        expected = [srv.mac, w.cli.ipv4, port, "udp", ""]
        root = subscribers["root"]
        root.wait_line(lambda line: line.startswith("signal ") and json.loads(line[7:]) == expected, timeout=5)
        assert [s for s in root.signals_after_sync() if s[2] == port] == [expected]
        assert [s for s in subscribers["member"].signals_after_sync() if s[2] == port] == [expected]
        # the bus had dispatched it (root got it); had it passed it on, it would precede "synced"
        assert subscribers["outsider"].signals_after_sync() == []
    finally:
        for s in subscribers.values():
            s.stop()


# -- devices.max_devices (last: it fills the kernel's device map and the inventory) ------------------

EXTRA_MACS = 30


def flood_new_macs(w: World, first: int = 0):
    """Two broadcast frames (an experimental EtherType, which nobody answers) from each of 30
    new MACs, the whole round twice, from cli's eth0; the MACs, in sending order."""
    macs = ["02:5b:de:00:%02x:%02x" % (first, i) for i in range(EXTRA_MACS)]
    batch = [frames.eth("ff:ff:ff:ff:ff:ff", mac, 0x88B5, bytes(46)) for mac in macs]
    assert w.lan.send_frames(w.cli, batch + batch) == 2 * EXTRA_MACS
    return macs


def test_devices_max_devices_overflow_evicts_the_floods_macs_never_the_known_devices(world):
    """devices.max_devices 16: 30 forged MACs, then 30 more, into a table with room for 16. The
    kernel's LRU makes room (an entry looked up again, a device that keeps talking, is kept
    over one used once), the inventory too: it holds at most 16, the known devices (confirmed:
    they kept talking) stay, the flood's MACs make room for each other, and every device
    dropped is counted (Dropped devices_evicted). A forged MAC's count is what its kernel entry
    held when read -- never more than it sent -- and no frame is counted lost."""
    w = world
    known = w.wait_devices(lambda ds: all(ds[m]["confirmed"] for m in (w.cli.mac, w.srv.mac)))
    confirmed = {m for m, d in known.items() if d["confirmed"]}
    assert len(known) < MAX_DEVICES and {w.cli.mac, w.srv.mac} <= confirmed, known.keys()
    lost, malformed = w.d.get_property("DeviceEventsLost"), w.d.get_property("MalformedFrames")
    evicted = w.d.get_property("Dropped")["devices_evicted"]
    first = flood_new_macs(w)
    time.sleep(3 * TICK)
    after_first = w.devices()
    assert confirmed <= set(after_first) and len(after_first) <= MAX_DEVICES
    assert set(after_first) - set(known) and set(after_first) - set(known) <= set(first)
    second = flood_new_macs(w, first=1)
    time.sleep(3 * TICK)
    devs = w.devices()
    assert confirmed <= set(devs) and len(devs) == MAX_DEVICES == w.d.get_property("DeviceCount")
    assert set(devs) & set(second)  # the newest flood made room for itself...
    gone = set(after_first) - set(devs)
    assert gone and gone <= set(first) | (set(known) - confirmed)  # ...from the older one's, never a known device's
    assert w.d.get_property("Dropped")["devices_evicted"] - evicted >= len(gone)
    for mac in set(devs) & (set(first) | set(second)):
        assert count(devs[mac], "tx_other_packets") <= 2, devs[mac]["counters"]
    assert (w.d.get_property("DeviceEventsLost"), w.d.get_property("MalformedFrames")) == (lost, malformed)
    assert w.d.proc.poll() is None


def test_after_the_overflow_a_new_device_is_still_seen_and_the_known_ones_keep_counting(world):
    """After the floods above, another 30 new MACs, then a device that keeps talking: it is
    listed, with exact counts, and cli's frames are still counted (its kernel entry was kept)."""
    w = world
    flood_new_macs(w, first=2)
    newcomer = "00:1b:21:5b:99:01"
    before = count(w.devices()[w.cli.mac], "tx_udp_packets")
    sent = w.lan.send_udp(w.cli, [f"{w.srv.ipv4}:{DISCARD_PORT}"], 5)
    for _ in range(3):  # three ticks of frames: it kept talking
        assert w.lan.send_frames(w.cli, [frames.eth("ff:ff:ff:ff:ff:ff", newcomer, 0x88B5, bytes(46))]) == 1
        time.sleep(2 * TICK)
    devs = w.wait_devices(lambda ds: newcomer in ds and ds[newcomer]["confirmed"])
    assert count(devs[newcomer], "tx_other_packets") == 3 and devs[newcomer]["confirmed"]
    assert {w.cli.mac, w.srv.mac} <= set(devs) and len(devs) == MAX_DEVICES
    assert count(devs[w.cli.mac], "tx_udp_packets") == before + sent.packets  # counted as before the floods
