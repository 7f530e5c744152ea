"""Bursts on the shipped defaults (only warm-up and learning compressed): one tick far above normal
alerts at once, a moderate deviation still needs consecutive_ticks, and steady, jittered and
slowly ramping traffic raises nothing."""
import dataclasses

import numpy as np
import pytest

from netwatchd.alerting.alerts import AlertIds
from netwatchd.config import AlertsConfig, ConfigError, parse_config
from netwatchd.alerting.detector import Detector
from netwatchd.alerting.observation import TickObservation

SEC = 1_000_000
T0 = 1_700_000_000 * SEC
DEV, SCANNER, CMD = "00:00:0c:00:00:01", "00:50:56:00:00:02", "backupd"
# shipped defaults; only time compressed (warm-up in ticks, learning period)
CFG = dataclasses.replace(AlertsConfig(), warmup_ticks=30, learning_period_sec=0)


def detector(cfg=CFG):
    return Detector(cfg, AlertIds(T0), learning_until_usec=T0 + cfg.learning_period_sec * SEC)


def background(t, rng, level=1.0):
    """A LAN's usual tick: a few SYNs per device, a handful of connects per command, a new peer
    now and then. `level` scales the rates (a ramp)."""
    return TickObservation(
        time_usec=T0 + t * SEC,
        device_connects={DEV: int(rng.poisson(3 * level)), SCANNER: int(rng.poisson(2 * level))},
        device_new_peers={DEV: int(rng.random() < 0.05)},
        device_new_ports={SCANNER: int(rng.random() < 0.05)},
        command_connects={CMD: int(rng.poisson(6 * level)), "curl": int(rng.poisson(2 * level))},
    )


def run(d, observations):
    out = []
    for n, obs in enumerate(observations):
        out += [(n, a.kind, a.subject) for a in d.tick(obs)]
    return out


def warm(d, rng, ticks=60):
    assert run(d, (background(t, rng) for t in range(ticks))) == []


@pytest.mark.parametrize("shape", ["steady", "jittered", "ramping"])
def test_background_raises_nothing_on_the_defaults(shape):
    rng = np.random.default_rng(7)
    d = detector()

    def tick(t):
        if shape == "steady":
            return background(t, rng)
        if shape == "jittered":  # every tick anywhere from a fifth to three times the usual
            return background(t, rng, level=float(rng.uniform(0.2, 3.0)))
        return background(t, rng, level=1.0 + t / 100)  # x30 over the run, 1% of the start a tick

    assert run(d, (tick(t) for t in range(3000))) == []


@pytest.mark.parametrize("offset", [0.0, 0.5, 0.9])
def test_nmap_few_hundred_ports_in_20ms_is_fan_out_within_two_ticks_wherever_the_tick_boundary(offset):
    """300 first-seen ports in 20 ms: split by a tick boundary at `offset` of the scan."""
    rng = np.random.default_rng(1)
    d = detector()
    warm(d, rng)
    first = int(300 * (1 - offset))
    ticks = [background(60 + t, rng) for t in range(5)]
    for obs, ports in zip(ticks, (first, 300 - first)):
        obs.device_new_ports[SCANNER] = ports
        obs.device_new_peers[SCANNER] = min(ports, 1)
        obs.device_connects[SCANNER] = obs.device_connects.get(SCANNER, 0) + ports
    fired = run(d, ticks)
    assert [(k, s) for _, k, s in fired] == [("fan_out", f"device:{SCANNER}")]  # and not also connect_rate
    assert fired[0][0] <= 1


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_a_syn_storm_of_a_few_thousand_from_one_device_is_connect_rate_within_two_ticks(offset):
    rng = np.random.default_rng(2)
    d = detector()
    warm(d, rng)
    ticks = [background(60 + t, rng) for t in range(5)]
    first = int(2000 * (1 - offset))
    ticks[0].device_connects[DEV] += first
    ticks[1].device_connects[DEV] += 2000 - first
    ticks[0].device_new_ports[DEV] = 1  # one closed port
    fired = run(d, ticks)
    assert [(k, s) for _, k, s in fired] == [("connect_rate", f"device:{DEV}")]
    assert fired[0][0] <= 1


def test_a_command_making_thousands_of_connects_in_a_fraction_of_a_second_is_connect_rate_at_once():
    rng = np.random.default_rng(3)
    d = detector()
    warm(d, rng)
    storm = background(60, rng)
    storm.command_connects[CMD] = 3000
    (alert,) = d.tick(storm)
    assert (alert.kind, alert.subject, alert.observed) == ("connect_rate", f"command:{CMD}", 3000)
    assert alert.score >= CFG.burst_score
    # a command never seen before: judged by the cold rate, and a burst as soon as it is one
    fresh = background(61, rng)
    fresh.command_connects["stormer"] = 3000
    assert [(a.kind, a.subject) for a in d.tick(fresh)] == [("connect_rate", "command:stormer")]


def test_a_moderate_deviation_still_needs_consecutive_ticks():
    rng = np.random.default_rng(4)
    d = detector()
    warm(d, rng)
    ticks = [background(60 + t, rng) for t in range(4)]
    for obs in ticks[:1]:
        obs.command_connects[CMD] = 400  # far above normal (z ~ 150) but under burst_process_connects
    assert run(d, ticks) == []  # one tick of it: nothing
    ticks = [background(70 + t, rng) for t in range(4)]
    for obs in ticks[:2]:
        obs.command_connects[CMD] = 400
    assert run(d, ticks) == [(1, "connect_rate", f"command:{CMD}")]  # two in a row: confirmed
    ticks = [background(80 + t, rng) for t in range(3)]
    ticks[0].device_new_peers[DEV] = 60  # a quiet device reaching 60 new peers once: not a burst
    assert run(d, ticks) == []


def test_burst_settings_out_of_range_are_named_config_errors():
    for text, key, problem in [
        ("alerts: {burst_score: 0.5}", "alerts.burst_score", "0.5 is out of range 1.0..1000000.0"),
        ("alerts: {burst_fan_out: 0}", "alerts.burst_fan_out", "0 is out of range 1..10000000"),
        ("alerts: {burst_device_connects: -3}", "alerts.burst_device_connects", "-3 is out of range 1..10000000"),
        ("alerts: {burst_process_connects: many}", "alerts.burst_process_connects", "expected an integer, got 'many'"),
        ("alerts: {burst_score: 5}", "alerts.burst_score",
         "5 is below z_threshold 6: a burst must be further from normal than an anomaly"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config(text, "/etc/netwatchd/x.yaml")
        assert (info.value.key_path, info.value.problem) == (key, problem)
        assert str(info.value) == f"/etc/netwatchd/x.yaml: {key}: {problem}"
