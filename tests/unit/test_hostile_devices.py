"""The device engine against a LAN that lies and floods (issue 21), with the fake probe of
test_device_monitor: forged MACs, unsolicited DNS answers, names without end, addresses claimed
by the thousand. Every table has a bound, what it drops is counted, and a real device is still
seen."""
import logging

import pytest

from netwatchd.alerting.observation import TickObservation
from netwatchd.config import DevicesConfig
from netwatchd.devices.activity_log import ActivityLog
from netwatchd.devices.address_owners import AddressOwners
from netwatchd.devices.counter_deltas import CounterDeltas
from netwatchd.devices.model import Device, append_bounded, bump_bounded
from netwatchd.devices.monitor import DeviceMonitor
from netwatchd.devices.records import EV_ADDRESS, EV_SNIPPET, DevCounters, DeviceLosses, mac_text, readings_from_counters
from tests.unit.test_device_monitor import CISCO, PHONE, FakeProbe, FakeStore, FakeVendors, dns_query, event

REAL = "00:1b:21:aa:bb:cc"  # an Intel NIC joining after the flood


def flood_macs(n, universal=False):
    first = 0x00 if universal else 0x02  # 0x02: locally administered, as macof's random ones often are
    return ["%02x:66:%02x:%02x:%02x:%02x" % (first, i >> 24 & 0xFF, i >> 16 & 0xFF, i >> 8 & 0xFF, i & 0xFF)
            for i in range(n)]


def sending(frames, created_ns=1):
    c = DevCounters()
    c.packets[0] = frames  # tx arp
    c.created_ns = created_ns
    c.ifindex = 7
    return c


def monitor(max_devices=4096, clock=None, store=None):
    clock = clock or [1000.0]
    probe = FakeProbe()
    mon = DeviceMonitor(probe, DevicesConfig(max_devices=max_devices), FakeVendors(), store or FakeStore(),
                        clock=lambda: clock[0], list_interfaces=dict, if_name=lambda i: "nwh1")
    return probe, clock, mon


def observe(mon, t=1):
    obs = TickObservation(time_usec=t)
    mon.take_observation(obs)
    return obs


# -- the kernel's LRU, read every tick -------------------------------------------------------------

def test_an_entry_the_lru_made_anew_counts_from_zero_and_vanished_ones_count_as_evicted():
    deltas = CounterDeltas()
    step = lambda counters: {mac: d for mac, d, *_ in deltas.step(readings_from_counters(counters))}  # noqa: E731
    assert step({PHONE: sending(1), CISCO: sending(5)}) == {CISCO: {"tx_arp_packets": 5}, PHONE: {"tx_arp_packets": 1}}
    # PHONE evicted; CISCO evicted and made anew by its next frames (2 since): not 2 - 5
    assert step({CISCO: sending(2, created_ns=9)}) == {CISCO: {"tx_arp_packets": 2}}
    assert deltas.evicted == 2
    assert step({CISCO: sending(3, created_ns=9)}) == {CISCO: {"tx_arp_packets": 1}}
    assert step({CISCO: sending(3, created_ns=9)}) == {}  # idle: nothing
    assert deltas.evicted == 2


def test_per_cpu_values_add_up_and_the_first_cpu_says_where_the_device_was_first_seen():
    import ctypes

    from netwatchd.devices.records import readings_from_raw

    first, later = sending(3, created_ns=500), sending(4, created_ns=0)
    first.ifindex, later.ifindex, later.tcp_syns = 7, 0, 1
    key = bytes.fromhex(CISCO.replace(":", "")) + b"\0\0"
    r = readings_from_raw(key, bytes(later) + bytes(first), 1, 2)
    assert (mac_text(int(r.macs[0])), int(r.counters[0][0]), int(r.counters[0][-1])) == (CISCO, 7, 1)
    assert (int(r.created_ns[0]), int(r.ifindex[0])) == (500, 7)
    from netwatchd.devices.records import COUNTERS_DTYPE

    assert COUNTERS_DTYPE.itemsize == ctypes.sizeof(DevCounters)  # whose layout test_header_layouts checks


# -- confirmation: kept talking ------------------------------------------------------------------

def test_one_forged_frame_never_confirms_a_device_two_ticks_of_frames_do():
    probe, clock, mon = monitor()
    probe.counters = {PHONE: sending(1), CISCO: sending(1)}
    mon.tick()
    probe.counters = {PHONE: sending(1), CISCO: sending(3)}  # CISCO again a tick later, PHONE not
    mon.tick()
    assert (mon.devices[CISCO].confirmed, mon.devices[PHONE].confirmed) == (True, False)
    obs = observe(mon)
    assert [d["mac"] for d in obs.devices_confirmed] == [CISCO]
    mon.tick()
    assert observe(mon).devices_confirmed == []  # once


# -- the inventory's bound ------------------------------------------------------------------------

def test_a_flood_bigger_than_the_inventory_evicts_its_own_macs_not_known_devices_and_says_how_many():
    probe, clock, mon = monitor(max_devices=16)
    probe.counters = {CISCO: sending(1)}
    mon.tick()
    probe.counters = {CISCO: sending(2)}
    mon.tick()  # CISCO kept talking: confirmed
    observe(mon)
    flood = flood_macs(5000)
    probe.raw = [event(EV_ADDRESS, mac, saddr="10.66.%d.%d" % (i >> 8, i & 0xFF)) for i, mac in enumerate(flood)]
    probe.counters = {CISCO: sending(2), **{mac: sending(1) for mac in flood[-4095:]}}  # the kernel LRU holds 4096
    mon.tick()
    assert len(mon.devices) == 16 and CISCO in mon.devices
    assert mon.evicted == 5000 - 15
    obs = observe(mon)
    assert len(obs.new_devices) == 5000  # every new MAC of the tick is still reported to the detector
    assert len(mon.addresses) == 15 and len(mon.owners) == 15  # the evicted took their addresses with them
    # a real device joining afterwards is in, a new device
    probe.counters = {CISCO: sending(2), REAL: sending(1)}
    mon.tick()
    assert REAL in mon.devices and [d["mac"] for d in observe(mon).new_devices] == [REAL]
    assert len(mon.devices) == 16 and CISCO in mon.devices


def test_a_floods_macs_are_not_written_until_a_minute_old_and_evicted_ones_are_deleted():
    store = FakeStore()
    probe, clock, mon = monitor(max_devices=16, store=store)
    probe.counters = {mac: sending(1) for mac in flood_macs(20)}
    mon.tick()
    assert store.saved == []  # unconfirmed and young: made (and 4 dropped) without a write
    clock[0] += 61
    mon.tick()
    assert store.saved == [{"metadata": flood_macs(20)[4:], "counters": flood_macs(20)[4:], "deleted": []}]
    probe.counters = {mac: sending(1) for mac in flood_macs(20, universal=True)}
    clock[0] += 10
    mon.tick()  # the next flood evicts the old one's survivors: their rows go
    assert store.saved[-1] == {"metadata": [], "counters": [], "deleted": flood_macs(20)[4:]}
    mon.save(everything=True)  # a clean stop writes the young ones too
    assert store.saved[-1]["metadata"] == sorted(flood_macs(20, universal=True)[4:])


def test_idle_devices_expire_unconfirmed_ones_sooner():
    probe, clock, mon = monitor()
    probe.counters = {CISCO: sending(1)}
    mon.tick()
    probe.counters = {CISCO: sending(2), PHONE: sending(1)}
    clock[0] += 1
    mon.tick()  # CISCO confirmed, PHONE not
    clock[0] += 86400 + 60
    mon.tick()
    assert set(mon.devices) == {CISCO} and mon.expired == 1
    clock[0] += 30 * 86400
    mon.tick()
    assert mon.devices == {} and mon.expired == 2


# -- DNS: names only from answers to questions -----------------------------------------------------

def query(mac, name, ident=0x1234, client="10.77.0.11", port=40000, server="10.77.0.1", qtype=1):
    return event(EV_SNIPPET, mac, app=1, transport=17, saddr=client, sport=port, daddr=server, dport=53,
                 payload=dns_query(name, qtype=qtype, ident=ident))


def answer(mac, name, addresses, ident=0x1234, client="10.77.0.11", port=40000, server="10.77.0.1"):
    return event(EV_SNIPPET, mac, app=1, direction=1, transport=17, saddr=server, sport=53, daddr=client,
                 dport=port, payload=dns_query(name, ident=ident, response=True, answers=addresses))


def test_an_unsolicited_answer_renames_nobody_and_labels_nothing():
    """The issue's forgery: device PHONE sends the host's port 53 a response naming CISCO's
    address c2.ubuntu.com (tx, QR=1); and an answer to CISCO that CISCO never asked for."""
    probe, _, mon = monitor()
    probe.raw = [event(EV_ADDRESS, CISCO, saddr="10.77.0.11"),
                 event(EV_SNIPPET, PHONE, app=1, transport=17, saddr="10.77.0.12", sport=53, daddr="10.77.0.1",
                       dport=53, payload=dns_query("c2.ubuntu.com", response=True, answers=["10.77.0.11"])),
                 answer(CISCO, "c2.ubuntu.com", ["10.77.0.11", "203.0.113.9"])]
    mon.poll()
    assert (mon.devices[CISCO].hostname, mon.devices[CISCO].hostname_source) == ("", "")
    assert mon.metadata.name_of(CISCO, "203.0.113.9") == "" and mon.metadata.name_of(PHONE, "10.77.0.11") == ""
    assert mon.metadata.questions.counts.unsolicited == 2 and mon.metadata.questions.counts.matched == 0


@pytest.mark.parametrize("mismatch", ["id", "port", "server", "name", "client", "device"])
def test_an_answer_that_does_not_echo_its_question_counts_nothing(mismatch):
    probe, _, mon = monitor()
    kwargs = {"id": {"ident": 0x4321}, "port": {"port": 40001}, "server": {"server": "10.77.0.66"},
              "client": {"client": "10.77.0.99"}}.get(mismatch, {})
    name = "other.example" if mismatch == "name" else "www.example"
    who = PHONE if mismatch == "device" else CISCO
    probe.raw = [query(CISCO, "www.example"), answer(who, name, ["203.0.113.7"], **kwargs)]
    mon.poll()
    assert mon.metadata.name_of(CISCO, "203.0.113.7") == "" and mon.metadata.name_of(PHONE, "203.0.113.7") == ""
    assert mon.metadata.questions.counts.matched == 0


def test_a_matched_answer_names_for_the_device_that_asked_once_and_only_its_own_records():
    probe, _, mon = monitor()
    probe.raw = [event(EV_ADDRESS, PHONE, saddr="10.77.0.12"), query(CISCO, "printer.lan"),
                 answer(CISCO, "printer.lan", ["10.77.0.12"]),
                 answer(CISCO, "printer.lan", ["203.0.113.8"])]  # the same answer again: no question left
    mon.poll()
    assert mon.metadata.name_of(CISCO, "10.77.0.12") == "printer.lan"
    assert mon.metadata.name_of(CISCO, "203.0.113.8") == ""
    assert mon.metadata.name_of(PHONE, "10.77.0.12") == ""
    # an answer naming one of our devices' addresses is that device's hostname (source dns)
    assert (mon.devices[PHONE].hostname, mon.devices[PHONE].hostname_source) == ("printer.lan", "dns")
    assert (mon.metadata.questions.counts.matched, mon.metadata.questions.counts.unsolicited) == (1, 1)


def test_a_device_flooding_questions_pushes_out_its_own_not_others():
    from netwatchd.devices.dns_answers import MAX_PENDING_PER_DEVICE

    probe, _, mon = monitor()
    probe.raw = [query(CISCO, "www.example")]
    probe.raw += [query(PHONE, f"n{i}.flood.example", ident=i, client="10.77.0.12") for i in range(5000)]
    probe.raw += [answer(CISCO, "www.example", ["203.0.113.7"])]
    mon.poll()
    assert mon.metadata.name_of(CISCO, "203.0.113.7") == "www.example"
    assert len(mon.metadata.questions) == MAX_PENDING_PER_DEVICE
    assert mon.metadata.questions.counts.questions_dropped == 5000 - MAX_PENDING_PER_DEVICE


# -- bounded by bytes -------------------------------------------------------------------------------

def test_names_are_bounded_in_count_and_bytes_and_the_newest_stay():
    names = {}
    for i in range(300):
        bump_bounded(names, f"{i:03d}" + "x" * 252, max_keys=64, max_bytes=2048)
    assert len(names) == 8 and sum(map(len, names)) <= 2048
    assert list(names)[-1].startswith("299")
    bump_bounded(names, list(names)[0], 64, 2048)  # seen again: to the end, not out
    assert list(names)[-1].startswith("292")
    items = []
    for i in range(100):
        append_bounded(items, "y" * 300, 16, 2048, len)
    assert len(items) == 6


def test_a_device_sending_thousands_of_long_names_keeps_about_8_kib_of_them():
    import json

    from netwatchd.devices.model import HTTP_REQUESTS_BYTES, NAMES_BYTES, RECENT_PEERS_BYTES
    from netwatchd.devices.records import EV_PATTERN

    probe, _, mon = monitor()
    long = lambda i: (f"{i:04d}." + "a" * 60 + ".") * 3 + "example"  # noqa: E731 - ~200 bytes
    for i in range(1000):
        probe.raw = [query(CISCO, long(i), ident=i),
                     event(EV_SNIPPET, CISCO, app=3, transport=6, daddr="10.77.0.1", dport=80,
                           payload=f"GET /{'p' * 300} HTTP/1.1\r\nHost: {long(i)}\r\n\r\n".encode()),
                     event(EV_PATTERN, CISCO, transport=6, daddr=f"10.{i >> 8}.{i & 255}.1", dport=80)]
        mon.poll()
    d = mon.devices[CISCO]
    assert sum(map(len, d.dns_names)) <= NAMES_BYTES["dns_names"] and sum(map(len, d.http_hosts)) <= NAMES_BYTES["http_hosts"]
    assert sum(sum(map(len, r.values())) for r in d.http_requests) <= HTTP_REQUESTS_BYTES
    assert sum(len(p["address"]) + len(p["name"]) for p in d.recent_peers) <= RECENT_PEERS_BYTES
    assert len(json.dumps(d.to_dict())) < 12 * 1024
    assert long(999) in d.dns_names


# -- address owners and log lines ------------------------------------------------------------------

def test_address_owners_are_bounded_and_leave_with_their_device():
    owners = AddressOwners(capacity=100)
    for i in range(1000):
        owners.claim(f"10.0.{i >> 8}.{i & 255}", CISCO if i % 2 else PHONE)
    assert len(owners) == 100 and len(owners.previous) == 0
    owners.forget(CISCO)
    assert len(owners) == 50 and set(owners.owner.values()) == {PHONE}
    assert owners.claim("10.0.3.231", CISCO) is None  # PHONE's, and still there: a move
    assert owners.claim("10.0.3.230", CISCO) == {"ip": "10.0.3.230", "old_mac": PHONE, "new_mac": CISCO,
                                                 "flip_flop": False}


def test_a_flood_is_one_info_line_a_minute_not_one_per_device(caplog):
    probe, clock, mon = monitor()
    caplog.set_level(logging.INFO, logger="netwatchd.devices")
    probe.raw = [event(EV_ADDRESS, mac, saddr="10.66.%d.%d" % (i >> 8, i & 0xFF))
                 for i, mac in enumerate(flood_macs(3000))]
    mon.tick()
    clock[0] += 61
    mon.tick()
    # the device watcher's lines only: a thread another test left behind may log meanwhile
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("netwatchd.devices")]
    assert lines == ["devices in the last 61 s: 3000 new devices, 3000 new address bindings"]


def test_activity_log_says_nothing_when_nothing_happened(caplog):
    clock = [0.0]
    activity = ActivityLog(logging.getLogger("netwatchd.devices.test"), lambda: clock[0])
    caplog.set_level(logging.INFO)
    clock[0] = 120
    activity.flush()
    activity.count("evicted", 3)
    activity.flush()  # inside the interval
    clock[0] = 181
    activity.flush()
    assert [r.getMessage() for r in caplog.records if r.name == "netwatchd.devices.test"] == [
        "devices in the last 61 s: 3 devices evicted from the full inventory"]


def test_a_loaded_device_keeps_its_addresses_indexed():
    probe, _, mon = monitor(store=FakeStore([Device(mac=CISCO, ipv4={"10.77.0.11": 5}, confirmed=True)]))
    assert [d.mac for d in mon.owners_of("10.77.0.11")] == [CISCO]


def test_an_arp_spoof_whose_event_the_full_ring_lost_is_still_an_address_move():
    """The flood filled the ring; the kernel's ip_owner table still says who answers for what:
    a tick after a loss reads it, and the move of a known address is seen. Addresses nobody
    owned (the flood's own claims, lost) stay lost: detail, and no device is made of them."""
    probe, clock, mon = monitor()
    probe.losses = lambda: DeviceLosses(ring_full=0)
    probe.raw = [event(EV_ADDRESS, CISCO, saddr="10.77.0.11")]
    mon.tick()
    observe(mon)
    bindings = [("10.77.0.11", PHONE), ("10.66.0.1", "02:66:00:00:00:01"), ("10.77.0.12", CISCO)]
    probe.read_address_bindings = lambda: list(bindings)
    mon.tick()  # no loss yet: nothing read
    assert observe(mon).address_changes == []
    probe.losses = lambda: DeviceLosses(ring_full=40000)
    mon.tick()
    assert observe(mon).address_changes == [{"ip": "10.77.0.11", "old_mac": CISCO, "new_mac": PHONE, "flip_flop": False}]
    assert "02:66:00:00:00:01" not in mon.devices
    mon.tick()  # the same loss count: not read again
    assert observe(mon).address_changes == []


def test_a_device_saved_before_the_bounds_loads_within_them_and_confirmed_if_seen_twice():
    old = {"mac": CISCO, "first_seen_usec": 5, "last_seen_usec": 9,
           "dns_names": {f"{i:03d}" + "x" * 252: 1 for i in range(256)},
           "http_requests": [{"method": "GET", "host": "h" * 200, "path": "/" + "p" * 255}] * 32,
           "recent_peers": [{"address": "10.0.0.%d" % i, "port": 80, "transport": "tcp", "name": "n" * 200}
                            for i in range(64)]}
    d = Device.from_dict(old)
    assert d.confirmed and len(d.dns_names) == 8 and list(d.dns_names)[-1].startswith("255")
    assert len(d.http_requests) == 4 and len(d.recent_peers) == 9
    assert d.recent_peers[-1]["address"] == "10.0.0.63"
    assert not Device.from_dict({"mac": PHONE, "first_seen_usec": 5, "last_seen_usec": 5}).confirmed
    assert not Device.from_dict({"mac": PHONE, "first_seen_usec": 5, "last_seen_usec": 9, "confirmed": False}).confirmed
