"""Devices on the wire (issue 3), against the real kernel: a LAN of network namespaces on a
bridge, netwatchd's TC classifier on the bridge ports, and what ListDevices / GetDevice /
netwatchctl say about it.

The LAN (tests/support/lan.py): devices `cisco` (an IEEE Cisco MAC), `random` (a locally
administered MAC), `pi` (Raspberry Pi), `srv` (Intel; runs the UDP echo, DNS, HTTP and TLS
servers) and `vm` (VMware; its link is deleted and re-created). Every device sends its first
frame after netwatchd is ready, so ARP and NDP are seen and every UDP datagram a device ever sent
is in the `ledger`, which the counters must equal exactly (the sender checks the kernel did not
drop one silently). One daemon serves the module; the persistence tests restart it on the same
state directory, so they come last.

The config is the shipped one with time compressed, except two keys these tests are about:
devices.interfaces lists the LAN's bridge ports, so that the host's own interfaces (whose
devices come and go with other people's traffic) cannot disturb exact device counts -- the
shipped `auto` is checked with exact counts by tests/integration/test_devices_auto.py --
and devices.capture_http, which the privacy test switches off and on by a reload.
"""
from __future__ import annotations

import csv
import ipaddress
import json
import re
import signal
import sys
import time
from collections import defaultdict
from typing import Dict, Optional

import pytest

from tests.support import frames
from tests.support.daemon import DaemonProcess, ctl, dbus_send_error, unvariant
from tests.support.lan import DNS_SERVER, UDP_ECHO, Node, UdpSent, mac_tail, randomized_mac
from tests.support.world import World

pytestmark = pytest.mark.root

TICK = 0.2
STORE_INTERVAL = 0.5
ECHO_PORT, DISCARD_PORT, DNS_PORT, HTTP_PORT, TLS_PORT = 7000, 9, 53, 8080, 8443
NO_SUCH_DEVICE = "org.netwatchd.Netwatchd1.Error.NoSuchDevice"
NAME_FIELDS = ("hostname", "dns_names", "http_hosts", "tls_names", "http_requests")
# ListDevices' fields, as the README lists them
SUMMARY_FIELDS = {"mac", "vendor", "randomized", "confirmed", "hostname", "hostname_source", "ipv4", "ipv6",
                  "interface", "vlan", "first_seen_usec", "last_seen_usec", "counters", "tcp_syns", "peers"}
CLIENTS = ("cisco", "random", "pi")


def link_local(mac: str) -> str:
    """The EUI-64 link-local address the kernel gives an interface with this MAC."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def oui_vendor(mac: str) -> str:
    """The vendor Debian's ieee-data names for the MA-L block of `mac` (read here, not by netwatchd)."""
    prefix = mac.replace(":", "")[:6].upper()
    with open("/usr/share/ieee-data/oui.csv", newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if row[1] == prefix:
                return row[2]
    raise LookupError(prefix)


@pytest.fixture(scope="module")
def world(make_world):
    """The LAN, its servers, the daemon watching it, and the UDP ledger: per device, the UDP
    packets/bytes it sent (tx) and was sent (rx), by our generators only; `untracked`: devices
    whose UDP a client we do not count touched (dig)."""
    w = make_world("nwdev", tools=("dbus-send", "dig", "curl", "openssl"))
    w.ledger = defaultdict(lambda: defaultdict(int))
    w.untracked = set()
    w.lan.add_node("cisco", "00:00:0c:" + mac_tail())
    w.lan.add_node("random", randomized_mac())
    w.lan.add_node("pi", "b8:27:eb:" + mac_tail())
    srv = w.lan.add_node("srv", "00:1b:21:" + mac_tail())
    w.lan.add_node("vm", "00:50:56:" + mac_tail())
    start_servers(w, srv)
    start_daemon(w)
    for name in CLIENTS + ("vm",):  # ARP and NDP both ways, seen by the daemon
        udp(w, name, 1, echo=True)
    return w


def start_servers(w: World, srv: Node) -> None:
    lan, py = w.lan, sys.executable
    cert, key = w.tmp / "cert.pem", w.tmp / "key.pem"
    lan.ns(srv, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=lan.test", "-days", "1")
    (w.tmp / "www").mkdir()
    w.dns_records = {
        "q4.name.test": {"A": "192.0.2.4"},
        "q6.name.test": {"AAAA": "2001:db8::6"},
        "printer.lan.test": {"A": srv.ipv4},  # names one of our devices: its hostname
    }
    lan.start(srv, py, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
    lan.start(srv, py, "-c", DNS_SERVER, str(DNS_PORT), json.dumps(w.dns_records), ready="ready")
    lan.start(srv, py, "-m", "http.server", "--bind", "::", str(HTTP_PORT), cwd=str(w.tmp / "www"))
    for accept in (f"0.0.0.0:{TLS_PORT}", f"[::]:{TLS_PORT}"):
        lan.start(srv, "openssl", "s_server", "-accept", accept, "-cert", str(cert), "-key", str(key),
                  "-www", "-quiet")
    lan.wait_tcp(srv, HTTP_PORT)
    lan.wait_tcp(srv, TLS_PORT)


def config(w: World, **devices) -> Dict:
    return {"tick_interval_sec": TICK,
            "devices": {"interfaces": w.lan.ports(), "store_interval_sec": STORE_INTERVAL, **devices}}


def start_daemon(w: World) -> DaemonProcess:
    """On the world's state directory (a restart keeps it); about devices.interfaces and
    devices.capture_http (the privacy test reloads it)."""
    return w.start_daemon(config(w), about=("devices.interfaces", "devices.capture_http"))


def udp(w: World, name: str, count: int, size: int = 32, echo: bool = False, family: str = "both") -> UdpSent:
    """`count` datagrams from device `name` to srv over IPv4 and/or IPv6, written to the ledger."""
    srv = w.node("srv")
    port = ECHO_PORT if echo else DISCARD_PORT
    targets = {"4": [f"{srv.ipv4}:{port}"], "6": [f"[{srv.ipv6}]:{port}"]}
    sent = w.lan.send_udp(w.node(name), targets.get(family, targets["4"] + targets["6"]), count, size, echo)
    for sender, receiver in ((name, "srv"), ("srv", name))[: 2 if echo else 1]:
        w.ledger[sender]["tx_packets"] += sent.packets
        w.ledger[sender]["tx_bytes"] += sent.frame_bytes
        w.ledger[receiver]["rx_packets"] += sent.packets
        w.ledger[receiver]["rx_bytes"] += sent.frame_bytes
    return sent


def client(w: World, name: str, *argv: str) -> str:
    """A real client (dig, curl, openssl) in device `name`; its output (stdout, then stderr)."""
    if argv[0] == "dig":  # its UDP (and the server's answers) are not in the ledger
        w.untracked |= {name, "srv"}
    r = w.lan.ns(w.node(name), *argv, check=False, timeout=30)
    assert r.returncode == 0, f"{argv} in {name}: {r.stdout}{r.stderr}"
    return r.stdout + r.stderr


def count(dev: Optional[Dict], name: str) -> int:
    return (dev or {}).get("counters", {}).get(name, 0)


def udp_counts(dev: Optional[Dict]) -> Dict[str, int]:
    return {f"{d}_{u}": count(dev, f"{d}_udp_{u}") for d in ("tx", "rx") for u in ("packets", "bytes")}


def names_of(dev: Dict) -> Dict:
    return {k: dev[k] for k in NAME_FIELDS}


# -- 1. devices with addresses, vendors and exact counts -----------------------------------------

def test_each_device_has_its_mac_addresses_vendor_and_exact_udp_counts(world):
    sizes = {"cisco": (37, 20), "random": (53, 100), "pi": (71, 333)}  # datagrams per family, payload
    for name, (n, size) in sizes.items():
        sent = udp(world, name, n, size)
        assert (sent.ipv4, sent.ipv6) == (n, n)
    ledger = world.ledger
    devs = world.wait_devices(lambda ds: all(
        count(ds.get(world.node(n).mac), "tx_udp_packets") >= ledger[n]["tx_packets"] for n in ledger))

    expected = {"cisco": (oui_vendor("00:00:0c"), False), "random": ("", True),
                "pi": (oui_vendor("b8:27:eb"), False), "srv": (oui_vendor("00:1b:21"), False),
                "vm": (oui_vendor("00:50:56"), False)}
    assert expected["cisco"][0].startswith("Cisco")
    assert set(devs) == {n.mac for n in world.lan.nodes.values()}
    assert world.d.get_property("DeviceCount") == len(world.lan.nodes)
    for name, (vendor, randomized) in expected.items():
        node, dev = world.node(name), devs[world.node(name).mac]
        assert (dev["vendor"], dev["randomized"], dev["interface"]) == (vendor, randomized, node.port), dev
        assert dev["ipv4"] == [node.ipv4], dev
        assert node.ipv6 in dev["ipv6"], dev
        assert set(dev["ipv6"]) <= {node.ipv6, link_local(node.mac)}, dev
        # every UDP datagram the device sent or was sent, frame bytes included, and nothing else
        if name not in world.untracked:
            assert udp_counts(dev) == dict(ledger[name]), (name, dev["counters"])
        assert dev["first_seen_usec"] <= dev["last_seen_usec"]
    for name in CLIENTS:
        peers = devs[world.node(name).mac]["recent_peers"]
        srv = world.node("srv")
        assert [srv.ipv4, DISCARD_PORT, "udp", ""] in peers and [srv.ipv6, DISCARD_PORT, "udp", ""] in peers

    # GetDevice by MAC in another spelling, by IPv4 and by IPv6
    cisco = world.node("cisco")
    for key in (cisco.mac.upper().replace(":", "-"), cisco.ipv4, cisco.ipv6):
        assert world.d.device(key)["mac"] == cisco.mac, key
    error, message = dbus_send_error(world.bus, "GetDevice", ["string:02:00:5e:00:53:01"])
    assert (error, message) == (NO_SUCH_DEVICE, "no device with MAC 02:00:5e:00:53:01 has been seen")
    error, _ = dbus_send_error(world.bus, "GetDevice", ["string:10.77.0.250"])
    assert error == NO_SUCH_DEVICE


# -- 2. real clients: dig, curl, openssl -----------------------------------------------------------


def test_dig_query_names_show_on_the_asking_device(world):
    srv = world.node("srv")
    assert client(world, "cisco", "dig", f"@{srv.ipv4}", "q4.name.test", "A", "+short", "+tries=1",
                        "+time=5").split() == ["192.0.2.4"]
    assert client(world, "pi", "dig", f"@{srv.ipv6}", "q6.name.test", "AAAA", "+short", "+tries=1",
                        "+time=5").split() == ["2001:db8::6"]
    assert client(world, "random", "dig", f"@{srv.ipv4}", "printer.lan.test", "A", "+short", "+tries=1",
                        "+time=5").split() == [srv.ipv4]
    mac = {n: world.node(n).mac for n in world.lan.nodes}
    devs = world.wait_devices(lambda ds: "q4.name.test" in ds[mac["cisco"]]["dns_names"]
                        and "q6.name.test" in ds[mac["pi"]]["dns_names"] and ds[mac["srv"]]["hostname"])
    assert devs[mac["cisco"]]["dns_names"] == ["q4.name.test"]
    assert devs[mac["pi"]]["dns_names"] == ["q6.name.test"]
    assert devs[mac["random"]]["dns_names"] == ["printer.lan.test"]
    assert devs[mac["srv"]]["dns_names"] == []  # it answered; it did not ask
    # an answer that names one of the devices' addresses names that device
    assert (devs[mac["srv"]]["hostname"], devs[mac["srv"]]["hostname_source"]) == ("printer.lan.test", "dns")
    assert all(devs[mac[n]]["hostname"] == "" for n in CLIENTS + ("vm",))


def test_curl_host_and_path_show_on_the_requesting_device(world):
    srv = world.node("srv")
    curl = ("curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10")
    assert client(world, "random", *curl, "--resolve", f"web.lan.test:{HTTP_PORT}:{srv.ipv4}",
                        f"http://web.lan.test:{HTTP_PORT}/some/path?q=1") == "404"
    assert client(world, "cisco", *curl, f"http://[{srv.ipv6}]:{HTTP_PORT}/v6/path") == "404"
    mac = {n: world.node(n).mac for n in world.lan.nodes}
    host4, host6 = f"web.lan.test:{HTTP_PORT}", f"[{srv.ipv6}]:{HTTP_PORT}"
    devs = world.wait_devices(lambda ds: ds[mac["random"]]["http_hosts"] and ds[mac["cisco"]]["http_hosts"])
    assert devs[mac["random"]]["http_hosts"] == [host4]
    assert devs[mac["random"]]["http_requests"] == [["GET", host4, "/some/path?q=1"]]
    assert devs[mac["cisco"]]["http_hosts"] == [host6]
    assert devs[mac["cisco"]]["http_requests"] == [["GET", host6, "/v6/path"]]
    assert devs[mac["random"]]["tcp_syns"] >= 1 and devs[mac["cisco"]]["tcp_syns"] >= 1
    assert devs[mac["srv"]]["http_hosts"] == [] and devs[mac["srv"]]["tcp_syns"] == 0


def test_tls_server_names_show_on_the_connecting_device(world):
    srv = world.node("srv")
    out = client(world, "pi", "openssl", "s_client", "-connect", f"{srv.ipv4}:{TLS_PORT}",
                       "-servername", "tls4.lan.test", "-brief")
    assert "CONNECTION ESTABLISHED" in out, out
    assert client(world, "random", "curl", "-sSk", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}",
                        "--max-time", "10", "--resolve", f"tls6.lan.test:{TLS_PORT}:[{srv.ipv6}]",
                        f"https://tls6.lan.test:{TLS_PORT}/") == "200"
    mac = {n: world.node(n).mac for n in world.lan.nodes}
    devs = world.wait_devices(lambda ds: ds[mac["pi"]]["tls_names"] and ds[mac["random"]]["tls_names"])
    assert devs[mac["pi"]]["tls_names"] == ["tls4.lan.test"]
    assert devs[mac["random"]]["tls_names"] == ["tls6.lan.test"]
    assert devs[mac["srv"]]["tls_names"] == []


# -- 3. netwatchctl ------------------------------------------------------------------------------

def test_netwatchctl_devices_and_device(world):
    r = ctl(world.bus, "devices")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    for node in world.lan.nodes.values():
        assert node.mac in rows, r.stdout
        assert node.ipv4 in rows[node.mac] and node.port in rows[node.mac], rows[node.mac]
    assert "(randomized)" in rows[world.node("random").mac]
    assert "Cisco Systems" in rows[world.node("cisco").mac]

    r = ctl(world.bus, "devices", "--json")
    assert r.returncode == 0 and {d["mac"] for d in json.loads(r.stdout)} >= {n.mac for n in world.lan.nodes.values()}
    listed = {d["mac"]: d for d in json.loads(r.stdout)}
    for node in world.lan.nodes.values():  # summaries: no name lists (`device` has them), whether confirmed
        assert set(listed[node.mac]) == SUMMARY_FIELDS, listed[node.mac]
        assert listed[node.mac]["ipv4"] == [node.ipv4]

    cisco, rnd = world.node("cisco"), world.node("random")
    for key in (cisco.mac, cisco.ipv4, cisco.ipv6):
        r = ctl(world.bus, "device", key)
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in r.stdout.splitlines()[:12])}
        assert fields["MAC"] == cisco.mac and fields["Vendor"] == oui_vendor(cisco.mac), r.stdout
        assert fields["IPv4"] == cisco.ipv4 and cisco.ipv6 in fields["IPv6"], r.stdout
        assert fields["DNS names"] == "q4.name.test", r.stdout
        assert re.search(r"^udp\s+\d+", r.stdout, re.M), r.stdout  # the per-protocol table
    r = ctl(world.bus, "device", rnd.mac)
    assert r.returncode == 0 and f"MAC: {rnd.mac}  (randomized)" in r.stdout, r.stdout
    r = ctl(world.bus, "--json", "device", rnd.ipv4)
    assert r.returncode == 0 and json.loads(r.stdout)["mac"] == rnd.mac

    r = ctl(world.bus, "device", "02:00:5e:00:53:02")
    assert (r.returncode, r.stdout) == (5, ""), r
    assert r.stderr == "netwatchctl: no device with MAC 02:00:5e:00:53:02 has been seen\n"
    r = ctl(world.bus, "device", "192.0.2.200")
    assert r.returncode == 5 and "no device with address 192.0.2.200" in r.stderr, r
    r = ctl(world.bus, "device", "no-such-thing")
    assert r.returncode == 1 and "neither a MAC address nor an IP address" in r.stderr, r


def test_listdevicespage_pages_through_listdevices(world):
    """ListDevicesPage(offset, limit): the summaries of ListDevices, a page at a time, and the total."""
    d = world.d
    listed = [r["mac"] for r in map(unvariant, d.call("ListDevices")[0])]
    assert len(listed) >= len(world.lan.nodes) >= 2
    records, total = d.call("ListDevicesPage", "uu", 0, 1)
    assert len(records) == 1 and total == len(listed)
    first = unvariant(records[0])
    assert first["mac"] == listed[0] and set(first) == SUMMARY_FIELDS, first
    paged = []
    for offset in range(total + 1):  # one past the end: an empty page
        records, now = d.call("ListDevicesPage", "uu", offset, 1)
        assert now == total and len(records) == (1 if offset < total else 0), (offset, records)
        paged += [unvariant(r)["mac"] for r in records]
    assert paged == listed  # each device once, in ListDevices' order
    records, now = d.call("ListDevicesPage", "uu", 0, 0)  # 0: the default page, 100
    assert [unvariant(r)["mac"] for r in records] == listed
    assert dbus_send_error(world.bus, "ListDevicesPage", ["uint32:0", "uint32:1001"]) == (
        "org.freedesktop.DBus.Error.InvalidArgs", "limit must be at most 1000, got 1001")
    assert dbus_send_error(world.bus, "ListDevicesPage", ["uint32:0", "uint32:1000"]) == ("", "")


# -- 4. garbage on the wire ----------------------------------------------------------------------

def test_garbage_frames_crash_nothing_and_are_attributed_to_no_real_device(world):
    d, lan = world.d, world.lan
    g_src, g_noise, g_dst = "02:ba:d0:" + mac_tail(), "02:ba:d1:" + mac_tail(), "02:ba:d2:" + mac_tail()
    cisco, srv = world.node("cisco"), world.node("srv")
    before = d.devices()
    malformed_before = d.get_property("MalformedFrames")
    batch = frames.garbage(g_src, g_noise, g_dst, victim_mac=cisco.mac, lan_v4=srv.ipv4, lan_v6=srv.ipv6)
    assert lan.send_frames(world.node("pi"), batch) == len(batch)
    after = world.wait_devices(lambda ds: g_src in ds and g_noise in ds)

    assert d.proc.poll() is None, d.log()
    assert "Traceback" not in d.log() and "failed" not in d.log(), d.log()
    assert d.get_property("MalformedFrames") > malformed_before
    assert d.get_property("DeviceEventsLost") == 0
    # new devices: only the MACs the garbage was sent from (and the one it was sent to)
    assert set(before) == {n.mac for n in world.lan.nodes.values()}
    assert set(after) - set(before) <= {g_src, g_noise, g_dst}, set(after) - set(before)
    assert {g_src, g_noise} <= set(after)
    for mac in (g_src, g_noise, g_dst):
        if mac in after:
            assert names_of(after[mac]) == {"hostname": "", "dns_names": [], "http_hosts": [], "tls_names": [],
                                            "http_requests": []}, after[mac]
            assert after[mac]["ipv4"] == [] and after[mac]["ipv6"] == [], after[mac]
    # the real devices: no names, no addresses, and no counts but their own ARP/NDP upkeep
    # (which may show a device's link-local address for the first time)
    for node in world.lan.nodes.values():
        old, new = before[node.mac], after[node.mac]
        mac = node.mac
        assert names_of(new) == names_of(old), mac
        assert new["ipv4"] == old["ipv4"] == [node.ipv4], mac
        assert set(old["ipv6"]) <= set(new["ipv6"]) <= {node.ipv6, link_local(mac)}, mac
        moved = {k for k in set(old["counters"]) | set(new["counters"])
                 if count(old, k) != count(new, k) and not re.match(r"(tx|rx)_(arp|icmpv6)_", k)}
        assert not moved, (mac, {k: (count(old, k), count(new, k)) for k in moved})
    assert not any(a == "10.77.0.199" for dev in after.values() for a in dev["ipv4"])
    assert d.device(cisco.mac)["mac"] == cisco.mac  # still answering


# -- 5. an interface that goes away and comes back -------------------------------------------------

def test_a_deleted_interface_is_logged_and_watched_again_when_it_returns(world):
    d, lan, vm = world.d, world.lan, world.node("vm")
    assert vm.port in d.get_property("Interfaces")
    lan.unplug(vm)
    deadline = time.monotonic() + 10
    while vm.port in d.get_property("Interfaces") and time.monotonic() < deadline:
        time.sleep(TICK / 2)
    assert vm.port not in d.get_property("Interfaces")
    d.wait_log(f"interface {vm.port} is gone; will watch it again when it returns")
    assert vm.mac in d.devices()  # the inventory keeps the device

    lan.plug(vm)
    deadline = time.monotonic() + 10
    while vm.port not in d.get_property("Interfaces") and time.monotonic() < deadline:
        time.sleep(TICK / 2)
    assert sorted(d.get_property("Interfaces")) == sorted(lan.ports())
    assert d.log().count(f"watching devices on {vm.port}") == 2, d.log()
    sent = udp(world, "vm", 5, size=64, echo=True)
    devs = world.wait_devices(lambda ds: count(ds[vm.mac], "tx_udp_packets") >= world.ledger["vm"]["tx_packets"])
    assert udp_counts(devs[vm.mac]) == dict(world.ledger["vm"]), (sent, devs[vm.mac]["counters"])
    assert devs[vm.mac]["interface"] == vm.port


# -- 6. privacy switches, changed by a reload ----------------------------------------------------

def test_capture_http_off_after_a_reload_keeps_http_hosts_out(world):
    d, srv, rnd = world.d, world.node("srv"), world.node("random")
    curl = ("curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10")

    def request(host: str) -> Dict:
        syns = d.devices()[rnd.mac]["tcp_syns"]
        assert client(world, "random", *curl, "--resolve", f"{host}:{HTTP_PORT}:{srv.ipv4}",
                            f"http://{host}:{HTTP_PORT}/private") == "404"
        # the connection was seen (its SYN counted), so its request had every chance to be
        return world.wait_devices(lambda ds: ds[rnd.mac]["tcp_syns"] > syns)[rnd.mac]

    d.reload(config(world, capture_http=False))
    dev = request("off.lan.test")
    assert not any("off.lan.test" in h for h in dev["http_hosts"]), dev
    assert not any(r[2] == "/private" for r in dev["http_requests"]), dev

    d.reload(config(world))
    dev = request("on.lan.test")
    assert f"on.lan.test:{HTTP_PORT}" in dev["http_hosts"], dev
    assert not any("off.lan.test" in h for h in dev["http_hosts"]), dev


def test_dhcp_hostname_and_requested_address_name_the_client(world):
    """A real DHCP client (busybox udhcpc) asks for an address under a hostname; no server
    answers, but its DISCOVERs carry both, and they belong to the device that sent them."""
    vm = world.node("pi")  # dig ran there already: its UDP is not in the ledger anyway
    requested = vm.ipv4.rsplit(".", 1)[0] + ".200"
    world.untracked |= {"pi"}  # its broadcasts are UDP the ledger does not count
    world.lan.ns(vm, "busybox", "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", "2", "-T", "1",
                 "-s", "/bin/true", "-x", "hostname:nw-laptop", "-r", requested, check=False, timeout=20)
    devs = world.wait_devices(lambda ds: ds[vm.mac]["hostname"] == "nw-laptop")
    dev = devs[vm.mac]
    assert (dev["hostname"], dev["hostname_source"]) == ("nw-laptop", "dhcp")
    assert requested in dev["ipv4"] and vm.ipv4 in dev["ipv4"]
    assert all(d["hostname"] != "nw-laptop" for mac, d in devs.items() if mac != vm.mac)


# -- 7. persistence: SIGTERM and SIGKILL, then a new daemon on the same state directory --------------

def restart(world, sig: int) -> DaemonProcess:
    old = world.d
    old.signal(sig)
    old.proc.wait(15)
    if sig == signal.SIGTERM:
        assert old.proc.returncode == 0, old.log()
    return start_daemon(world)


def assert_kept(before: Dict[str, Dict], after: Dict[str, Dict]) -> None:
    assert set(after) >= set(before)
    for mac, old in before.items():
        assert after[mac]["first_seen_usec"] == old["first_seen_usec"], mac
        for key in ("vendor", "randomized", "ipv4", "dns_names", "http_hosts", "tls_names", "hostname"):
            assert after[mac][key] == old[key], (mac, key)


def test_sigterm_restart_keeps_the_inventory_and_counters_continue(world):
    before = world.wait_devices(lambda ds: True)
    late = udp(world, "cisco", 11, size=48)  # still uncounted by user space when SIGTERM arrives
    restart(world, signal.SIGTERM)
    cisco = world.node("cisco").mac
    restored = world.d.devices()
    assert_kept(before, restored)
    assert count(restored[cisco], "tx_udp_packets") == count(before[cisco], "tx_udp_packets") + late.packets

    more = udp(world, "cisco", 7, size=48, family="4")
    expected = count(restored[cisco], "tx_udp_packets") + more.packets
    after = world.wait_devices(lambda ds: count(ds[cisco], "tx_udp_packets") >= expected)
    for mac, old in before.items():
        extra = (late.packets + more.packets, late.frame_bytes + more.frame_bytes) if mac == cisco else (0, 0)
        assert (count(after[mac], "tx_udp_packets"), count(after[mac], "tx_udp_bytes")) == (
            count(old, "tx_udp_packets") + extra[0], count(old, "tx_udp_bytes") + extra[1]), mac
    for name in set(world.ledger) - world.untracked:  # and still the whole ledger
        assert udp_counts(after[world.node(name).mac]) == dict(world.ledger[name]), name


def test_sigkill_after_a_batch_interval_keeps_devices_first_seen_and_counts(world):
    vm = world.node("vm").mac  # no dig ran there: its ledger is exact
    udp(world, "vm", 9, size=10)
    before = world.wait_devices(lambda ds: count(ds[vm], "tx_udp_packets") >= world.ledger["vm"]["tx_packets"])
    assert udp_counts(before[vm]) == dict(world.ledger["vm"])
    time.sleep(STORE_INTERVAL + 2 * TICK)  # the batch with those counts is written
    restart(world, signal.SIGKILL)
    restored = world.d.devices()
    assert_kept(before, restored)
    for mac, old in before.items():
        assert udp_counts(restored[mac]) == udp_counts(old), mac
    more = udp(world, "vm", 4, size=10, family="6")
    after = world.wait_devices(lambda ds: count(ds[vm], "tx_udp_packets") >= world.ledger["vm"]["tx_packets"])
    assert udp_counts(after[vm]) == dict(world.ledger["vm"]), more
    assert sorted(world.d.get_property("Interfaces")) == sorted(world.lan.ports())
