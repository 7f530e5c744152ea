"""MAC changes, ARP spoofing and flip-flops through the detector: one address_change per event,
whatever order and tick the frames of the new MAC arrive in."""
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


def test_a_move_seen_only_over_ipv6_is_reported_a_tick_later_with_the_others_it_came_with():
    got = run(detector(), [([NEW], [move(LL, OLD, NEW), move(V6, OLD, NEW)])])
    assert got == [(1, "address_change", f"ip:{LL}", V6)]


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
