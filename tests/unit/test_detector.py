"""Baselines and the detector on synthetic ticks: each kind fires on its subject, background
alone never fires, warm-up, floors, streaks, cooldowns, policies, persistence."""
import dataclasses

import numpy as np
import pytest

from netwatchd.alerting.alerts import AlertIds
from netwatchd.alerting.baseline import BaselineParams, BaselineTable
from netwatchd.config import AlertsConfig
from netwatchd.alerting.detector import Detector
from netwatchd.alerting.observation import TickObservation

SEC = 1_000_000
A, B = "02:00:00:00:00:0a", "00:00:0c:00:00:0b"
CFG = AlertsConfig(learning_period_sec=10, warmup_ticks=20, ewma_alpha=0.1, z_threshold=6.0, min_stddev=1.0,
                   consecutive_ticks=2, cooldown_sec=60, device_connect_floor=20, process_connect_floor=50,
                   fan_out_floor=20, cold_connect_rate=1000, randomized_macs="once")


def detector(cfg=CFG, start=0):
    return Detector(cfg, AlertIds(start), learning_until_usec=start + cfg.learning_period_sec * SEC)


def quiet(t, rng):
    """Background: a few SYNs per device, a few connects per command, a new peer now and then."""
    return TickObservation(
        time_usec=t * SEC,
        device_connects={A: int(rng.poisson(2)), B: int(rng.poisson(3))},
        device_new_peers={A: int(rng.random() < 0.1)},
        command_connects={"curl": int(rng.poisson(4)), "sshd": int(rng.poisson(1))},
    )


def warmed(d, ticks=60, seed=1):
    rng = np.random.default_rng(seed)
    alerts = []
    for t in range(ticks):
        alerts += d.tick(quiet(t, rng))
    return alerts, rng


def test_background_alone_raises_nothing():
    d = detector()
    alerts, rng = warmed(d, ticks=600)
    assert alerts == []


def test_connect_storm_from_a_command_alerts_once_within_two_ticks():
    d = detector()
    _, rng = warmed(d)
    fired = []
    for t in range(60, 66):
        obs = quiet(t, rng)
        obs.command_connects["curl"] = 400
        obs.command_pids["curl"] = [4242]
        fired.append(d.tick(obs))
    assert fired[0] == []  # one anomalous tick is not yet an alert (consecutive_ticks=2)
    (alert,) = fired[1]
    assert (alert.kind, alert.subject) == ("connect_rate", "command:curl")
    assert alert.observed == 400 and alert.baseline < 10 and alert.score > 6
    assert alert.details["pids"] == "4242"
    assert sum(len(f) for f in fired) == 1  # the cooldown holds the rest of the storm


def test_a_scan_is_fan_out_not_also_connect_rate():
    d = detector()
    _, rng = warmed(d)
    kinds = []
    for t in range(60, 63):
        obs = quiet(t, rng)
        obs.device_connects[B] = 900
        obs.device_new_ports[B] = 900
        obs.device_new_peers[B] = 1
        kinds += [(a.kind, a.subject) for a in d.tick(obs)]
    assert kinds == [("fan_out", f"device:{B}")]


def test_a_burst_to_one_peer_is_connect_rate():
    d = detector()
    _, rng = warmed(d)
    kinds = []
    for t in range(60, 63):
        obs = quiet(t, rng)
        obs.device_connects[B] = 300
        kinds += [(a.kind, a.subject) for a in d.tick(obs)]
    assert kinds == [("connect_rate", f"device:{B}")]


def test_below_the_floor_nothing_fires_however_unusual():
    d = detector()
    _, rng = warmed(d)
    for t in range(60, 70):
        obs = quiet(t, rng)
        obs.device_connects[A] = 19  # far above its normal 2, but under device_connect_floor
        assert d.tick(obs) == []


def test_a_key_warming_up_is_judged_by_the_cold_rate():
    d = detector()
    obs = [TickObservation(time_usec=t * SEC, command_connects={"new-tool": 999}) for t in range(3)]
    assert [d.tick(o) for o in obs] == [[], [], []]  # below cold_connect_rate
    obs = [TickObservation(time_usec=t * SEC, command_connects={"other": 1500}) for t in range(3, 5)]
    assert [a.subject for o in obs for a in d.tick(o)] == ["command:other"]


def next_tick(d, usec):
    """A tick with nothing in it: when new devices held one tick are reported."""
    return d.tick(TickObservation(time_usec=usec))


def test_new_device_after_learning_and_randomized_policies():
    d = detector()
    learning = TickObservation(time_usec=5 * SEC, new_devices=[{"mac": B, "vendor": "Cisco"}])
    assert d.tick(learning) == []
    assert next_tick(d, 11 * SEC) == []  # seen while learning: learnt silently, even when reported after it
    later = TickObservation(time_usec=20 * SEC, new_devices=[{"mac": "00:00:0c:00:00:0c", "vendor": "Cisco",
                                                               "interface": "eth0", "ipv4": ["10.0.0.9"]}])
    assert d.tick(later) == []  # held one tick: it may be a known device changing its MAC
    (alert,) = next_tick(d, 21 * SEC)
    assert (alert.kind, alert.subject, alert.timestamp_usec) == ("new_device", "device:00:00:0c:00:00:0c", 21 * SEC)
    assert alert.message == "new device 00:00:0c:00:00:0c (Cisco) on eth0, 10.0.0.9"
    phones = TickObservation(time_usec=22 * SEC, new_devices=[
        {"mac": "02:11:11:11:11:11", "randomized": True}, {"mac": "06:22:22:22:22:22", "randomized": True}])
    assert d.tick(phones) == []
    once = next_tick(d, 23 * SEC)
    assert [(a.kind, a.subject, a.message) for a in once] == [
        ("new_device", "randomized-macs", "new device(s) with randomized MACs, latest 02:11:11:11:11:11 (2 this tick)")]
    d.tick(dataclasses.replace(phones, time_usec=24 * SEC))
    assert next_tick(d, 25 * SEC) == []  # cooling down
    ignore = detector(dataclasses.replace(CFG, randomized_macs="ignore"))
    ignore.tick(dataclasses.replace(phones, time_usec=30 * SEC))
    assert next_tick(ignore, 31 * SEC) == []
    every = detector(dataclasses.replace(CFG, randomized_macs="alert"))
    every.tick(dataclasses.replace(phones, time_usec=30 * SEC))
    assert [a.subject for a in next_tick(every, 31 * SEC)] == ["device:02:11:11:11:11:11", "device:06:22:22:22:22:22"]


def test_address_change_and_flip_flop():
    d = detector()
    change = TickObservation(time_usec=1 * SEC, address_changes=[{"ip": "10.0.0.5", "old_mac": A, "new_mac": B}])
    (a,) = d.tick(change)
    assert (a.kind, a.subject, a.message) == ("address_change", "ip:10.0.0.5", f"10.0.0.5 moved from {A} to {B}")
    flip = TickObservation(time_usec=100 * SEC, address_changes=[
        {"ip": "10.0.0.5", "old_mac": B, "new_mac": A, "flip_flop": True}])
    (a,) = d.tick(flip)
    assert a.message == f"flip flop: 10.0.0.5 went back from {B} to {A}" and a.details["flip_flop"] == "true"


def test_disabled_alerts_still_learn():
    d = detector(dataclasses.replace(CFG, enabled=False))
    _, rng = warmed(d)
    assert d.tables["command_connects"].stats("curl")[2] == 60


def test_state_round_trip_keeps_baselines_and_cooldowns():
    d = detector()
    _, rng = warmed(d)
    d.last_alert_usec[("connect_rate", "command:curl")] = 59 * SEC
    saved = {k: np.array(v) for k, v in d.state().items()}
    again = detector()
    again.load_state(saved)
    assert again.tables["command_connects"].stats("curl") == d.tables["command_connects"].stats("curl")
    assert again.last_alert_usec == d.last_alert_usec


def test_baseline_vectorized_matches_the_arithmetic():
    t = BaselineTable(capacity=2)
    p = BaselineParams(alpha=0.5, z_threshold=10, min_stddev=1, warmup_ticks=1, floor=0, cold_rate=1e9, consecutive=1)
    t.update({"k": 2.0}, p)
    t.update({"k": 4.0, "j": 1.0}, p)  # grows past its capacity
    mean, std, ticks = t.stats("k")
    # mean: 0 -> 1 -> 2.5 ; var: 0 -> 0.5*(0+0.5*4)=1 -> 0.5*(1+0.5*9)=2.75
    assert (mean, round(std**2, 6), ticks) == (2.5, 2.75, 2)
    assert t.stats("j")[2] == 1


@pytest.mark.parametrize("keys", [100_000])
def test_100k_keys_tick_is_vectorized(keys):
    t = BaselineTable()
    p = BaselineParams(0.02, 6, 1, 10, 20, 1000, 2)
    t.update({f"k{i}": 1.0 for i in range(keys)}, p)
    x = np.ones(keys)
    x[7] = 5000
    import time

    start = time.perf_counter()
    for _ in range(3):
        anomalies = t.update_dense(x, p)
    assert (time.perf_counter() - start) / 3 < 0.5  # generous: the bench measures it properly
    assert [a.key for a in anomalies] == ["k7"]


def test_a_new_mac_taking_over_a_known_address_is_an_address_change_only():
    d = detector()
    obs = TickObservation(time_usec=30 * SEC, new_devices=[{"mac": B}],
                          address_changes=[{"ip": "10.0.0.5", "old_mac": A, "new_mac": B}])
    assert [(a.kind, a.subject) for a in d.tick(obs)] == [("address_change", "ip:10.0.0.5")]
