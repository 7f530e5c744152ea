"""The device engine with a fake probe, fake interfaces and a fake clock."""
import socket
import struct

import pytest

from netwatchd.config import DevicesConfig
from netwatchd.devices.monitor import DeviceMonitor
from netwatchd.devices.queries import device_answer
from netwatchd.errors import NoSuchDevice
from netwatchd.devices.records import (
    EVENT_SIZE,
    SNIP_LEN,
    DevCounters,
    DevEvent,
    DeviceLosses,
    EV_ADDRESS,
    EV_NEW_DEVICE,
    EV_PATTERN,
    EV_SNIPPET,
    readings_from_counters,
)
from netwatchd.interfaces import Interface
from netwatchd.connects.queries import InvalidQuery

CISCO = "00:00:0c:12:34:56"
PHONE = "02:77:00:00:00:02"  # locally administered: randomized


class FakeVendors:
    def lookup(self, mac):
        return "Cisco Systems, Inc" if mac.startswith("00:00:0c") else ""


class FakeProbe:
    def __init__(self):
        self.raw, self.counters, self.links, self.settings = [], {}, {}, None

    def drain(self):
        raw, self.raw = self.raw, []
        return raw

    def read_counters(self):
        return readings_from_counters(self.counters)

    def losses(self):
        return DeviceLosses(ring_full=2)

    def attach(self, iface):
        self.links[iface.name] = iface.ifindex

    def detach(self, name, ifindex):
        del self.links[name]

    def attached(self):
        return sorted(self.links.items())

    def apply_settings(self, cfg):
        self.settings = cfg


class FakeStore:
    def __init__(self, devices=()):
        self.saved = []
        self._devices = list(devices)

    def load_devices(self):
        return list(self._devices)

    def save(self, metadata=(), counters=(), deleted=()):
        self.saved.append({"metadata": sorted(d.mac for d in metadata), "counters": sorted(d.mac for d in counters),
                           "deleted": list(deleted)})


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def event(kind, mac, *, app=0, direction=0, transport=0, family=2, saddr=None, daddr=None,
          sport=0, dport=0, payload=b"", ifindex=7, boot_ns=1_000_000_000):
    unspecified = "0.0.0.0" if family == 2 else "::"
    saddr, daddr = saddr or unspecified, daddr or unspecified
    ev = DevEvent()
    ev.boot_ns, ev.ifindex, ev.kind, ev.app, ev.direction, ev.transport = boot_ns, ifindex, kind, app, direction, transport
    ev.mac[:] = list(mac_bytes(mac))
    ev.family, ev.sport, ev.dport = family, sport, dport
    pack = socket.inet_pton(socket.AF_INET if family == 2 else socket.AF_INET6, saddr)
    ev.saddr[: len(pack)] = list(pack)
    pack = socket.inet_pton(socket.AF_INET if family == 2 else socket.AF_INET6, daddr)
    ev.daddr[: len(pack)] = list(pack)
    raw = bytes(ev)
    if kind == EV_SNIPPET:
        ev.snap_len = len(payload)
        raw = bytes(ev) + payload.ljust(SNIP_LEN, b"\0")
    assert len(raw) in (EVENT_SIZE, EVENT_SIZE + SNIP_LEN)
    return raw


def dns_query(name, qtype=1, ident=0x1234, response=False, answers=()):
    flags = 0x8180 if response else 0x0100
    msg = struct.pack(">HHHHHH", ident, flags, 1, len(answers), 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    msg += qname + struct.pack(">HH", qtype, 1)
    for address in answers:
        msg += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    return msg


@pytest.fixture
def env():
    probe = FakeProbe()
    ifaces = {"nwh1": Interface("nwh1", 7, True, False, False), "lo": Interface("lo", 1, True, True, False),
              "br0": Interface("br0", 9, True, False, True)}
    clock = [1000.0]
    mon = DeviceMonitor(probe, DevicesConfig(store_interval_sec=5), FakeVendors(), FakeStore(),
                        clock=lambda: clock[0], list_interfaces=lambda: dict(ifaces),
                        if_name=lambda i: {7: "nwh1", 9: "br0"}.get(i))
    return probe, ifaces, clock, mon


def test_auto_watches_ports_not_loopback_or_bridges_and_follows_changes(env):
    probe, ifaces, _, mon = env
    mon.refresh_interfaces()
    assert probe.attached() == [("nwh1", 7)]
    del ifaces["nwh1"]  # the interface vanished
    mon.refresh_interfaces()
    assert probe.attached() == []
    ifaces["nwh1"] = Interface("nwh1", 11, True, False, False)  # back, with a new ifindex
    mon.refresh_interfaces()
    assert probe.attached() == [("nwh1", 11)]


def test_new_device_vendor_randomized_and_addresses(env):
    probe, _, _, mon = env
    probe.raw = [
        event(EV_NEW_DEVICE, CISCO),
        event(EV_ADDRESS, CISCO, saddr="10.77.0.11"),
        event(EV_ADDRESS, CISCO, family=10, saddr="fd77::1"),
        event(EV_ADDRESS, PHONE, saddr="10.77.0.12"),
        event(EV_ADDRESS, PHONE, saddr="0.0.0.0"),  # a probe: no binding
    ]
    mon.poll()
    cisco, phone = mon.get_device(CISCO), mon.get_device("10.77.0.12")
    assert (cisco.vendor, cisco.randomized, cisco.interface) == ("Cisco Systems, Inc", False, "nwh1")
    assert list(cisco.ipv4) == ["10.77.0.11"] and list(cisco.ipv6) == ["fd77::1"]
    assert (phone.mac, phone.vendor, phone.randomized, list(phone.ipv4)) == (PHONE, "", True, ["10.77.0.12"])
    assert mon.get_device("FD77::1").mac == CISCO
    with pytest.raises(NoSuchDevice, match="no device with address 10.0.0.99"):
        mon.get_device("10.0.0.99")
    with pytest.raises(NoSuchDevice, match="no device with MAC 11:22:33:44:55:66"):
        mon.get_device("11-22-33-44-55-66")
    with pytest.raises(InvalidQuery, match="neither a MAC address nor an IP address"):
        mon.get_device("garbage")


def test_counters_continue_from_the_kernel_deltas_and_saves_are_batched(env):
    probe, _, clock, mon = env
    c = DevCounters()
    c.packets[4] = 10  # tx udp
    c.bytes[4] = 430
    c.tcp_syns = 2
    probe.counters = {CISCO: c}
    mon.tick()
    d = mon.get_device(CISCO)
    assert d.counters["tx_udp_packets"] == 10 and d.counters["tcp_syns"] == 2
    c2 = DevCounters.from_buffer_copy(bytes(c))
    c2.packets[4] = 15
    probe.counters = {CISCO: c2}
    clock[0] += 1
    mon.tick()
    assert d.counters["tx_udp_packets"] == 15 and d.last_seen_usec == 1001 * 10**6
    assert d.confirmed  # it sent frames in a second tick: it kept talking
    # the first tick's new device was not written yet (unconfirmed: a flood's MACs are not
    # worth a write); the second tick is inside the store interval
    assert mon.store.saved == []
    clock[0] += 5
    mon.tick()
    assert mon.store.saved == [{"metadata": [CISCO], "counters": [CISCO], "deleted": []}]
    c3 = DevCounters.from_buffer_copy(bytes(c2))
    c3.packets[4] = 20
    probe.counters = {CISCO: c3}
    clock[0] += 5
    mon.tick()
    # only its counters changed since: its names and addresses are not written again
    assert mon.store.saved[1:] == [{"metadata": [], "counters": [CISCO], "deleted": []}]


def test_dns_http_tls_and_dhcp_metadata(env):
    probe, _, _, mon = env
    hello = bytes.fromhex("16030100") + b"\0" * 10  # not a full hello: no SNI, nothing recorded
    probe.raw = [
        event(EV_ADDRESS, CISCO, saddr="10.77.0.11"),
        event(EV_SNIPPET, CISCO, app=1, transport=17, dport=53, payload=dns_query("www.example.test")),
        event(EV_SNIPPET, CISCO, app=1, direction=1, transport=17, sport=53,
              payload=dns_query("www.example.test", response=True, answers=["10.77.0.13"])),
        event(EV_PATTERN, CISCO, transport=6, daddr="10.77.0.13", dport=80),
        event(EV_SNIPPET, CISCO, app=3, transport=6, daddr="10.77.0.13", dport=80,
              payload=b"GET /some/path?q=1 HTTP/1.1\r\nHost: www.example.test\r\n\r\n"),
        event(EV_SNIPPET, CISCO, app=4, transport=6, dport=443, payload=hello),
    ]
    mon.poll()
    d = mon.get_device(CISCO)
    assert d.dns_names == {"www.example.test": 1}
    assert mon.metadata.name_of(CISCO, "10.77.0.13") == "www.example.test"
    assert mon.metadata.name_of(PHONE, "10.77.0.13") == ""  # CISCO's lookup, nobody else's
    assert d.recent_peers == [{"address": "10.77.0.13", "port": 80, "transport": "tcp", "name": "www.example.test"}]
    assert d.http_requests == [{"method": "GET", "host": "www.example.test", "path": "/some/path?q=1"}]
    assert d.tls_names == {}
    answer = device_answer(d)
    assert answer["http_hosts"] == ["www.example.test"] and answer["peers"] == 1


def test_garbage_snippets_never_crash_or_attribute(env):
    probe, _, _, mon = env
    probe.raw = [event(EV_SNIPPET, CISCO, app=a, payload=bytes(range(256)) * 3) for a in (1, 2, 3, 4)]
    probe.raw.append(b"\x01" * 13)  # a record of a size the kernel never sends
    mon.poll()
    d = mon.devices.get(CISCO)
    assert d is None or (not d.dns_names and not d.http_hosts and not d.tls_names and not d.hostname)
    assert mon.events_lost() == 2 + 1


def test_reconfigure_applies_the_privacy_switches(env):
    """(The restart-only keys, max_devices here, are named by config.restart_only_changes:
    tests/unit/test_restart_keys.py.)"""
    probe, _, _, mon = env
    import dataclasses

    bigger = dataclasses.replace(mon.cfg, max_devices=8192, capture_dns=False)
    mon.reconfigure(bigger)
    assert probe.settings.capture_dns is False


def test_dhcp_names_only_the_device_that_sent_it(env):
    from tests.unit.fixtures.app.wire import bootp

    probe, _, _, mon = env
    # DHCP REQUEST: type 3, hostname "laptop", requested 10.77.0.50
    options = b"\x35\x01\x03" + b"\x0c\x06laptop" + b"\x32\x04" + socket.inet_aton("10.77.0.50") + b"\xff"
    own = bootp(options, mac=mac_bytes(CISCO))
    forged = bootp(options.replace(b"laptop", b"forged"), mac=mac_bytes(PHONE))  # names another MAC
    probe.raw = [
        event(EV_SNIPPET, CISCO, app=2, transport=17, sport=68, dport=67, payload=own),
        event(EV_SNIPPET, CISCO, app=2, transport=17, sport=68, dport=67, payload=forged),
    ]
    mon.poll()
    d = mon.get_device(CISCO)
    assert (d.hostname, d.hostname_source, list(d.ipv4)) == ("laptop", "dhcp", ["10.77.0.50"])
    assert PHONE not in mon.devices


def test_observations_for_the_detector_new_devices_patterns_and_address_moves(env):
    from netwatchd.alerting.observation import TickObservation

    probe, _, _, mon = env
    other = "00:00:0c:99:99:99"
    probe.raw = [
        event(EV_ADDRESS, CISCO, saddr="10.77.0.5"),
        event(EV_PATTERN, CISCO, transport=6, daddr="10.77.0.9", dport=22),
        event(EV_PATTERN, CISCO, transport=6, daddr="10.77.0.9", dport=23),
        event(EV_PATTERN, CISCO, transport=6, daddr="10.77.0.8", dport=22),
    ]
    mon.poll()
    obs = TickObservation(time_usec=1)
    mon.take_observation(obs)
    assert [d["mac"] for d in obs.new_devices] == [CISCO] and obs.new_devices[0]["ipv4"] == ["10.77.0.5"]
    assert (obs.device_new_peers, obs.device_new_ports) == ({CISCO: 2}, {CISCO: 2})
    assert obs.address_changes == []
    probe.raw = [event(EV_ADDRESS, other, saddr="10.77.0.5")]  # the address moves to another MAC
    mon.poll()
    probe.raw = [event(EV_ADDRESS, CISCO, saddr="10.77.0.5")]  # and back: a flip-flop
    mon.poll()
    obs = TickObservation(time_usec=2)
    mon.take_observation(obs)
    assert obs.address_changes == [
        {"ip": "10.77.0.5", "old_mac": CISCO, "new_mac": other, "flip_flop": False},
        {"ip": "10.77.0.5", "old_mac": other, "new_mac": CISCO, "flip_flop": True},
    ]
    assert [d["mac"] for d in obs.new_devices] == [other]
    empty = TickObservation(time_usec=3)
    mon.take_observation(empty)
    assert empty == TickObservation(time_usec=3)


def test_a_device_s_first_ipv4_by_arp_is_in_the_observation_once(env):
    from netwatchd.alerting.observation import TickObservation

    probe, _, _, mon = env
    probe.raw = [event(EV_ADDRESS, CISCO, family=10, saddr="fe80::1"), event(EV_ADDRESS, CISCO, saddr="10.77.0.5"),
                 event(EV_ADDRESS, CISCO, saddr="10.77.0.6")]
    mon.poll()
    obs = TickObservation(time_usec=1)
    mon.take_observation(obs)
    assert obs.devices_ipv4_shown == [CISCO]
    mon.bind("00:00:0c:99:99:98", "10.77.0.7", 5)  # a DHCP request's address is only a wish
    later = TickObservation(time_usec=2)
    mon.take_observation(later)
    assert later.devices_ipv4_shown == []


def test_arp_and_echo_targets_are_probes_only_for_addresses_no_known_device_uses(env):
    """The classifier reports the targets of ARP requests (transport 254, bpf/device.h NW_T_ARP)
    and echo requests (1, 58) as patterns: a known device's address is use (asking for the
    gateway), an address nobody holds is a sweep's; neither is a peer, a port or a pattern."""
    from netwatchd.alerting.observation import TickObservation

    probe, _, _, mon = env
    gateway = "00:1b:21:00:00:01"
    seen = []
    mon.pattern_listeners.append(lambda *args: seen.append(args))
    probe.raw = [event(EV_ADDRESS, gateway, saddr="10.77.0.1"), event(EV_ADDRESS, CISCO, saddr="10.77.0.5"),
                 event(EV_PATTERN, CISCO, transport=254, daddr="10.77.0.1"),  # the gateway: known
                 event(EV_PATTERN, CISCO, transport=254, daddr="10.77.0.77"),
                 event(EV_PATTERN, CISCO, transport=1, daddr="10.77.0.78"),
                 event(EV_PATTERN, CISCO, family=10, transport=58, daddr="fd00::78")]
    mon.poll()
    obs = TickObservation(time_usec=1)
    mon.take_observation(obs)
    assert obs.device_probes == {CISCO: [["10.77.0.77", 0, "arp"], ["10.77.0.78", 0, "icmp"], ["fd00::78", 0, "icmpv6"]]}
    assert (obs.device_new_peers, obs.device_new_ports, seen) == ({}, {}, [])
    assert mon.devices[CISCO].peers == 0 and mon.devices[CISCO].recent_peers == []


def test_a_scan_whose_patterns_no_poll_has_read_yet_is_one_fan_out_in_the_tick_that_counted_its_syns(env):
    """The CI failure of stop 17: on a busy machine the poll ran late, so a tick saw a scan's
    3000 SYNs in the counters but none of its first-seen ports (still in the ring), and the
    device got a connect_rate alert besides the next tick's fan_out. A tick drains the ring after
    reading the counters: one tick has both, and the shipped detector says fan_out only."""
    from netwatchd.alerting.alerts import AlertIds
    from netwatchd.alerting.detector import Detector
    from netwatchd.alerting.observation import TickObservation
    from netwatchd.config import AlertsConfig

    probe, _, _, mon = env
    detector = Detector(AlertsConfig(learning_period_sec=0), AlertIds(0), 0)
    counters = DevCounters()
    counters.tcp_syns = 3000
    probe.counters = {CISCO: counters}
    probe.raw = [event(EV_PATTERN, CISCO, transport=6, daddr="10.77.0.9", dport=port) for port in range(1, 3001)]
    mon.tick()  # no poll() in between
    obs = TickObservation(time_usec=1)
    mon.take_observation(obs)
    assert (obs.device_connects, obs.device_new_ports) == ({CISCO: 3000}, {CISCO: 3000})
    assert [(a.kind, a.subject) for a in detector.tick(obs)] == [("fan_out", f"device:{CISCO}")]


@pytest.mark.parametrize("first", ["mld", "ndp", "dhcp-like ipv6", "arp"])
def test_a_mac_change_is_one_address_change_whatever_frame_of_the_new_mac_comes_first(env, first):
    """A device that changes its MAC keeps its IP: the new MAC's first frames (an MLD report, NDP
    binding an IPv6 address, ...) in one tick, its ARP with the old IPv4 address in the next. One
    address_change, never also new_device; a device that is really new still is one."""
    from netwatchd.alerting.alerts import AlertIds
    from netwatchd.config import AlertsConfig
    from netwatchd.alerting.detector import Detector
    from netwatchd.alerting.observation import TickObservation

    probe, _, _, mon = env
    detector = Detector(AlertsConfig(learning_period_sec=0), AlertIds(0), 0)
    moved, quiet = "00:00:0c:99:99:99", "00:00:0c:77:77:77"

    def tick(t, *raw):
        probe.raw = list(raw)
        mon.poll()
        obs = TickObservation(time_usec=t)
        mon.take_observation(obs)
        return [(a.kind, a.subject) for a in detector.tick(obs)]

    assert tick(1, event(EV_ADDRESS, CISCO, saddr="10.77.0.5"), event(EV_ADDRESS, CISCO, family=10, saddr="fd00::5")) == []
    assert tick(2) == [("new_device", f"device:{CISCO}")]  # held one tick
    frames = {"mld": [event(EV_NEW_DEVICE, moved)], "ndp": [event(EV_ADDRESS, moved, family=10, saddr="fe80::99")],
              "dhcp-like ipv6": [event(EV_ADDRESS, moved, family=10, saddr="fd00::5")],
              "arp": [event(EV_ADDRESS, moved, saddr="10.77.0.5")]}[first]
    alerts = tick(3, *frames, event(EV_NEW_DEVICE, quiet))
    alerts += tick(4, event(EV_ADDRESS, moved, saddr="10.77.0.5"), event(EV_ADDRESS, moved, family=10, saddr="fd00::5"))
    alerts += tick(5) + tick(6)
    assert sorted(alerts) == [("address_change", "ip:10.77.0.5"), ("new_device", f"device:{quiet}")]


def test_known_devices_and_their_addresses_survive_a_restart_without_new_device_or_moves(env):
    from netwatchd.devices.model import Device
    from netwatchd.alerting.observation import TickObservation

    probe, ifaces, clock, _ = env
    known = Device(mac=CISCO, first_seen_usec=5, ipv4={"10.77.0.5": 7})
    mon = DeviceMonitor(probe, DevicesConfig(), FakeVendors(), FakeStore([known]), clock=lambda: clock[0],
                        list_interfaces=lambda: dict(ifaces), if_name=lambda i: "nwh1")
    probe.raw = [event(EV_NEW_DEVICE, CISCO), event(EV_ADDRESS, CISCO, saddr="10.77.0.5")]
    mon.poll()
    obs = TickObservation(time_usec=1)
    mon.take_observation(obs)
    assert obs.new_devices == [] and obs.address_changes == []


def test_pattern_listeners_get_each_new_pattern_with_the_name_it_was_looked_up_by(env):
    probe, _, _, mon = env
    seen, calls = [], []
    mon.pattern_listeners.append(lambda *args: seen.append(args))

    def broken(*args):
        calls.append(args)
        raise RuntimeError("a listener that fails")

    mon.pattern_listeners.insert(0, broken)  # must not keep the others (or the bookkeeping) from it
    probe.raw = [
        event(EV_SNIPPET, CISCO, app=1, transport=17, dport=53, payload=dns_query("ntp.example.test")),
        event(EV_SNIPPET, CISCO, app=1, direction=1, transport=17, sport=53,
              payload=dns_query("ntp.example.test", response=True, answers=["10.77.0.20"])),
        event(EV_PATTERN, CISCO, transport=17, daddr="10.77.0.20", dport=123),
        event(EV_PATTERN, PHONE, transport=6, family=10, daddr="fd00::9", dport=443),
    ]
    mon.poll()
    assert seen == [(CISCO, "10.77.0.20", 123, "udp", "ntp.example.test"),
                    (PHONE, "fd00::9", 443, "tcp", "")]
    assert calls == seen
    assert mon.get_device(PHONE).recent_peers == [{"address": "fd00::9", "port": 443, "transport": "tcp", "name": ""}]


def test_protocol_totals_add_both_directions_over_devices(env):
    _, _, _, mon = env
    from netwatchd.devices.model import Device

    mon.devices = {"a": Device(mac="a", counters={"tx_tcp_packets": 3, "rx_tcp_packets": 2, "tx_arp_packets": 1}),
                   "b": Device(mac="b", counters={"rx_tcp_packets": 4})}
    totals = mon.protocol_totals()
    assert (totals["tcp"], totals["arp"], totals["udp"]) == (9, 1, 0)
