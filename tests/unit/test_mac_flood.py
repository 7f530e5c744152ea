"""MAC flooding on the shipped thresholds (alerts.mac_flood_new_macs 64 in 10 ticks): one
mac_flood alert per interface, no new_device per forged MAC, and a real device still reported --
at once on another port, as soon as it keeps talking on the flooded one."""
import numpy as np

from netwatchd.alerting.alerts import AlertIds
from netwatchd.alerting.detector import Detector
from netwatchd.alerting.mac_flood import RELEASE_MAX
from netwatchd.alerting.observation import TickObservation
from netwatchd.config import AlertsConfig

SHIPPED = AlertsConfig(learning_period_sec=0)
REAL = "00:1b:21:aa:bb:cc"


def macs(n, first=0x02):
    return ["%02x:66:00:%02x:%02x:%02x" % (first, i >> 16 & 0xFF, i >> 8 & 0xFF, i & 0xFF) for i in range(n)]


def new(mac, interface="veth-flood"):
    return {"mac": mac, "vendor": "", "randomized": int(mac[:2], 16) & 2 == 2, "interface": interface,
            "ipv4": [], "ipv6": []}


def run(detector, ticks):
    """ticks: [(new devices, confirmed devices)]; the alerts as (tick, kind, subject)."""
    out = []
    for t, (news, confirmed) in enumerate(ticks, 1):
        obs = TickObservation(time_usec=t * 1_000_000, new_devices=news, devices_confirmed=confirmed)
        out += [(t, a.kind, a.subject) for a in detector.tick(obs)]
    return out


def test_5000_forged_macs_are_one_flood_alert_and_a_real_device_on_another_port_is_one_new_device():
    for first in (0x02, 0x00):  # locally and universally administered
        d = Detector(SHIPPED, AlertIds(0), 0)
        flood = [new(m) for m in macs(5000, first)]
        alerts = run(d, [(flood[:2500], []), (flood[2500:] + [new(REAL, "veth-real")], []), ([], []), ([], [])])
        assert alerts == [(1, "mac_flood", "interface:veth-flood"), (3, "new_device", f"device:{REAL}")], first


def test_the_flood_alert_says_how_many_where_and_names_some():
    d = Detector(SHIPPED, AlertIds(0), 0)
    obs = TickObservation(time_usec=1, new_devices=[new(m) for m in macs(100)])
    (alert,) = d.tick(obs)
    assert (alert.kind, alert.observed, alert.baseline, alert.priority) == ("mac_flood", 100, 64, 3)
    assert alert.details["interface"] == "veth-flood" and alert.details["count"] == "100"
    assert alert.details["randomized"] == "100" and alert.details["window_ticks"] == "10"
    assert alert.details["samples"].split() == macs(100)[:8]


def test_a_real_device_on_the_flooded_port_is_reported_when_it_keeps_talking():
    d = Detector(SHIPPED, AlertIds(0), 0)
    flood = [new(m) for m in macs(200)]
    alerts = run(d, [(flood + [new(REAL)], []), ([], []), ([], [new(REAL)]), ([], [])])
    assert alerts == [(1, "mac_flood", "interface:veth-flood"), (3, "new_device", f"device:{REAL}")]
    d = Detector(SHIPPED, AlertIds(0), 0)
    d.tick(TickObservation(time_usec=1, new_devices=flood + [new(REAL)]))
    d.tick(TickObservation(time_usec=2))
    (released,) = d.tick(TickObservation(time_usec=3, devices_confirmed=[new(REAL)]))
    assert released.details["during_mac_flood"] == "true" and "joined during a MAC flood" in released.message


def test_the_flood_talking_again_is_still_the_flood():
    """More than RELEASE_MAX flood-born MACs of one port confirming in one tick is the flood
    replaying itself: none reported; up to RELEASE_MAX in a tick are devices, each reported."""
    d = Detector(SHIPPED, AlertIds(0), 0)
    flood = [new(m) for m in macs(200, 0x00)]  # universally administered: one alert each
    replay, joined = flood[: RELEASE_MAX + 1], flood[RELEASE_MAX + 1: 2 * RELEASE_MAX + 1]
    alerts = run(d, [(flood, []), ([], []), ([], replay), ([], joined)])
    assert alerts == [(1, "mac_flood", "interface:veth-flood")] + [
        (4, "new_device", f"device:{m['mac']}") for m in joined]


def test_new_devices_below_the_threshold_are_each_reported_as_on_a_quiet_lan():
    d = Detector(SHIPPED, AlertIds(0), 0)
    quiet = [new(m, "eth0") for m in macs(63, 0x00)]
    alerts = run(d, [(quiet, []), ([], [])])
    assert alerts == [(2, "new_device", f"device:{m['mac']}") for m in quiet]


def test_after_the_window_a_new_device_on_the_flooded_port_is_reported_at_once():
    d = Detector(SHIPPED, AlertIds(0), 0)
    ticks = [([new(m) for m in macs(500)], [])] + [([], [])] * 10 + [([new(REAL)], []), ([], [])]
    assert run(d, ticks) == [(1, "mac_flood", "interface:veth-flood"), (13, "new_device", f"device:{REAL}")]


def test_no_flood_alert_while_learning_and_one_per_cooldown():
    d = Detector(SHIPPED, AlertIds(0), learning_until_usec=10**9)
    assert run(d, [([new(m) for m in macs(500)], []), ([], [])]) == []
    d = Detector(SHIPPED, AlertIds(0), 0)
    ticks = [([new(m) for m in macs(100, 0x02 + 4 * k)], []) for k in range(20)]
    assert run(d, ticks) == [(1, "mac_flood", "interface:veth-flood")]


def test_flood_state_survives_a_restart():
    d = Detector(SHIPPED, AlertIds(0), 0)
    run(d, [([new(m) for m in macs(100, 0x00)], []), ([], [])])
    again = Detector(SHIPPED, AlertIds(1), 0)
    again.load_state({k: np.array(v) for k, v in d.state().items()})
    assert again.floods.count("veth-flood") == 100 and len(again.floods.flood_born) == 100
    (alert,) = again.tick(TickObservation(time_usec=3_000_000, devices_confirmed=[new(macs(100, 0x00)[7])]))
    assert (alert.kind, alert.subject) == ("new_device", f"device:{macs(100, 0x00)[7]}")
