"""MAC changes, ARP spoofing and flip-flops through the detector: one address_change per event,
whatever order and tick the frames of the new MAC arrive in."""
import math

import numpy as np
import pytest

from netwatchd.alerting.alerts import AlertIds
from netwatchd.config import AlertsConfig
from netwatchd.alerting.detector import Detector
from netwatchd.alerting.observation import TickObservation

SEC = 1_000_000
OLD, NEW, ATTACKER, VICTIM = "00:16:3e:00:00:01", "00:16:3e:00:00:02", "00:00:0c:00:00:03", "b8:27:eb:00:00:04"
V4, V6, LL = "10.77.0.5", "fd00:77::5", "fe80::216:3eff:fe00:1"


def detector():
    return Detector(AlertsConfig(learning_period_sec=0), AlertIds(0), 0)


def move(ip, old, new, flip=False):
    return {"ip": ip, "old_mac": old, "new_mac": new, "flip_flop": flip}


def run(d, ticks):
    """ticks: [(new device macs, changes)] one per tick, then two empty ticks."""
    out = []
    for n, (macs, changes) in enumerate(list(ticks) + [([], []), ([], [])]):
        obs = TickObservation(time_usec=(n + 1) * SEC, new_devices=[{"mac": m} for m in macs],
                              address_changes=changes)
        out += [(n, a.kind, a.subject, a.details.get("other_ips", "")) for a in d.tick(obs)]
    return out


@pytest.mark.parametrize("order", [
    "arp first", "ndp first same tick", "ndp first, arp next tick", "mld first, arp next tick",
    "link-local ndp, then global ndp and arp next tick"])
def test_a_mac_change_is_one_address_change_named_by_its_ipv4_address(order):
    ticks = {
        "arp first": [([NEW], [move(V4, OLD, NEW)]), ([], [move(V6, OLD, NEW)])],
        "ndp first same tick": [([NEW], [move(V6, OLD, NEW), move(V4, OLD, NEW)])],
        "ndp first, arp next tick": [([NEW], [move(V6, OLD, NEW)]), ([], [move(V4, OLD, NEW)])],
        "mld first, arp next tick": [([NEW], []), ([], [move(V4, OLD, NEW)])],
        "link-local ndp, then global ndp and arp next tick": [
            ([NEW], [move(LL, OLD, NEW)]), ([], [move(V6, OLD, NEW), move(V4, OLD, NEW)])],
    }[order]
    got = run(detector(), ticks)
    assert [(k, s) for _, k, s, _ in got] == [("address_change", f"ip:{V4}")]
    assert got[0][0] <= 1  # within 2 ticks of the first frame


def test_a_move_seen_only_over_ipv6_is_reported_four_seconds_later_with_the_others_it_came_with():
    """Held IPV6_FIRST_HOLD_SEC (4 s of observation time; issue 23) for its IPv4 move; none came."""
    got = run(detector(), [([NEW], [move(LL, OLD, NEW), move(V6, OLD, NEW)])] + [([], [])] * 3)
    assert got == [(4, "address_change", f"ip:{LL}", V6)]


def test_arp_spoofing_with_the_victim_answering_back_is_one_address_change_flagged_flip_flops_later():
    d = detector()
    spoof = [([], [move(V4, VICTIM, ATTACKER)]), ([], [move(V4, ATTACKER, VICTIM, flip=True)]),
             ([], [move(V4, VICTIM, ATTACKER, flip=True)]), ([], [move(V4, ATTACKER, VICTIM, flip=True)])]
    assert [(k, s) for _, k, s, _ in run(d, spoof)] == [("address_change", f"ip:{V4}")]
    later = TickObservation(time_usec=(700 + 1) * SEC, address_changes=[move(V4, VICTIM, ATTACKER, flip=True)])
    (alert,) = d.tick(later)  # after the cooldown, a flip-flop is still one, and says so
    assert alert.details["flip_flop"] == "true"
    assert alert.message == f"flip flop: {V4} went back from {VICTIM} to {ATTACKER}"


def test_a_really_new_device_is_still_new_device_a_tick_later():
    assert run(detector(), [([NEW], [])]) == [(1, "new_device", f"device:{NEW}", "")]


def test_what_is_held_survives_a_restart():
    d = detector()
    d.tick(TickObservation(time_usec=SEC, new_devices=[{"mac": NEW}, {"mac": "00:16:3e:00:00:09"}],
                           address_changes=[move(LL, OLD, NEW)]))
    saved = {k: np.array(v) for k, v in d.state().items()}
    again = detector()
    again.load_state(saved)
    alerts = again.tick(TickObservation(time_usec=5 * SEC, address_changes=[move(V4, OLD, NEW)]))
    assert sorted((a.kind, a.subject) for a in alerts) == [
        ("address_change", f"ip:{V4}"), ("new_device", "device:00:16:3e:00:00:09")]


def ticks_of(tick_sec: float, first_frame_sec: float, events, until_sec: float = 10):
    """Observations every `tick_sec`; `events`: [(at_sec, new device facts, changes)], each in the
    first tick ending at or after it (as the daemon sees a frame: at the end of its tick)."""
    obs, t = [], math.ceil(round(first_frame_sec / tick_sec, 6)) * tick_sec
    delivered = 0
    while t <= first_frame_sec + until_sec:
        new, moves = [], []
        for at, facts, changes in events:
            if t - tick_sec < at <= t:
                new += facts
                moves += changes
                delivered += 1
        obs.append(TickObservation(time_usec=round(t * SEC), new_devices=new, address_changes=moves))
        t += tick_sec
    assert delivered == len(events)
    return obs


@pytest.mark.parametrize("phase", [i / 10 for i in range(10)])
def test_a_mac_change_with_ipv6_first_and_ipv4_two_seconds_later_is_one_address_change(phase):
    """Issue 23: MLD/NDP from the new MAC, then its IPv4 moves 2 s later -- with 0.5 s ticks,
    whatever the phase of the first frame in its tick: one address_change, no new_device."""
    first = 100 + phase * 0.5
    d = detector()
    events = [(first, [{"mac": NEW, "ipv6": [LL], "ipv6_only": True}], []),
              (first + 2, [], [move(V4, OLD, NEW)])]
    got = [(a.kind, a.subject) for o in ticks_of(0.5, first, events) for a in d.tick(o)]
    assert got == [("address_change", f"ip:{V4}")]


@pytest.mark.parametrize("phase", [0.0, 0.45])
def test_an_ipv6_address_moving_first_and_the_ipv4_two_seconds_later_is_one_alert_named_by_the_ipv4(phase):
    first = 100 + phase
    d = detector()
    events = [(first, [{"mac": NEW, "ipv6": [V6], "ipv6_only": True}], [move(V6, OLD, NEW)]),
              (first + 2, [], [move(V4, OLD, NEW)])]
    got = [(a.kind, a.subject, a.details.get("other_ips")) for o in ticks_of(0.5, first, events) for a in d.tick(o)]
    assert got == [("address_change", f"ip:{V4}", V6)]


def test_a_really_new_device_seen_by_ipv6_alone_is_new_device_four_seconds_later():
    d = detector()
    events = [(100.2, [{"mac": NEW, "ipv6": [LL], "ipv6_only": True}], [])]
    got = [(o.time_usec / SEC, a.kind) for o in ticks_of(0.5, 100.2, events) for a in d.tick(o)]
    assert got == [(104.5, "new_device")]  # first reported at 100.5, held 4 s of observation time


def test_a_new_device_seen_by_arp_is_decided_a_tick_later_whatever_the_tick():
    d = detector()
    events = [(100.2, [{"mac": NEW, "ipv4": [V4], "ipv6_only": False}], [])]
    got = [(o.time_usec / SEC, a.kind) for o in ticks_of(0.5, 100.2, events) for a in d.tick(o)]
    assert got == [(101.0, "new_device")]


def test_what_seen_by_ipv6_alone_means():
    from netwatchd.devices.model import Device, seen_by_ipv6_alone

    assert seen_by_ipv6_alone(Device(NEW, counters={"tx_icmpv6_packets": 2}))
    assert seen_by_ipv6_alone(Device(NEW, ipv6={LL: 1}, counters={"tx_udp_packets": 3}))
    assert not seen_by_ipv6_alone(Device(NEW, counters={"tx_icmpv6_packets": 2, "tx_arp_packets": 1}))
    assert not seen_by_ipv6_alone(Device(NEW, ipv4={V4: 1}, ipv6={LL: 1}))
    assert not seen_by_ipv6_alone(Device(NEW, counters={"tx_udp_packets": 3}))  # family unknown
    assert not seen_by_ipv6_alone(Device(NEW))


def test_a_new_device_seen_by_ipv6_first_is_decided_as_soon_as_its_ipv4_shows_by_arp():
    """Link-up: MLD first, then the device's own ARP a tick later, no address moved -> new_device
    in that tick, not 4 s later (TickObservation.devices_ipv4_shown)."""
    d = detector()
    first = TickObservation(time_usec=100 * SEC, new_devices=[{"mac": NEW, "ipv6": [LL], "ipv6_only": True}])
    assert d.tick(first) == []
    arp = TickObservation(time_usec=100 * SEC + SEC // 2, devices_ipv4_shown=[NEW])
    assert [(a.kind, a.subject) for a in d.tick(arp)] == [("new_device", f"device:{NEW}")]


def test_an_address_move_in_the_tick_the_ipv4_shows_wins_over_new():
    d = detector()
    d.tick(TickObservation(time_usec=100 * SEC, new_devices=[{"mac": NEW, "ipv6": [LL], "ipv6_only": True}]))
    arp = TickObservation(time_usec=101 * SEC, devices_ipv4_shown=[NEW], address_changes=[move(V4, OLD, NEW)])
    assert [(a.kind, a.subject) for a in d.tick(arp)] == [("address_change", f"ip:{V4}")]
    assert d.tick(TickObservation(time_usec=106 * SEC)) == []
