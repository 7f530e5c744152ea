"""Seasonality on the shipped defaults (an hour of the week): a nightly backup's burst at 02:00 is
alerted while nothing is learnt, excused at 02:00 once its slot was seen a week earlier, and
still alerted at 14:00; replay decides the same; the profiles survive a restart."""
import dataclasses
import time

import numpy as np
import pytest

from netwatchd.alerting.alerts import AlertIds
from netwatchd.config import AlertsConfig, ConfigError, parse_config
from netwatchd.alerting.detector import Detector
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.replay import replay

SEC = 1_000_000
TICK_SEC = 120  # one observation every two minutes keeps two weeks at 10080 ticks
CFG = dataclasses.replace(AlertsConfig(), warmup_ticks=30, learning_period_sec=0)
# a Monday at 00:00 local time
MONDAY = int(time.mktime((2026, 11, 2, 0, 0, 0, 0, 0, -1)))


def at(day, hour, minute=0):
    return MONDAY + day * 86400 + hour * 3600 + minute * 60


def history(weeks, extra_bursts=()):
    """borg: ~5 connects a tick, 5000 a tick from 02:00 to 02:10 every night; plus bursts at
    the given (day, hour) times."""
    rng = np.random.default_rng(11)
    extra = {at(d, h) for d, h in extra_bursts}
    for t in range(MONDAY, MONDAY + weeks * 7 * 86400, TICK_SEC):
        lt = time.localtime(t)
        nightly = lt.tm_hour == 2 and lt.tm_min < 10
        burst = any(0 <= t - e < 600 for e in extra)
        n = 5000 if nightly or burst else int(rng.poisson(5))
        yield TickObservation(time_usec=t * SEC, command_connects={"borg": n, "curl": int(rng.poisson(2))})


def alerts_by_time(alerts):
    return [(time.localtime(a.timestamp_usec // SEC)[:5], a.kind, a.subject) for a in alerts]


def test_a_nightly_burst_is_normal_at_0200_once_learnt_and_still_an_alert_at_1400():
    got = replay(history(2, extra_bursts=[(9, 14)]), CFG)  # week 2, Wednesday 14:00
    week2 = [a for a in got if a.timestamp_usec >= at(7, 0) * SEC]
    week1 = [a for a in got if a.timestamp_usec < at(7, 0) * SEC]
    # week 1: every night's 02:00 is a slot never seen: one alert a night (then cooldown)
    assert [(d[2], d[3], d[4], k, s) for d, k, s in alerts_by_time(week1)] == [
        (2 + n, 2, 0, "connect_rate", "command:borg") for n in range(7)]
    # week 2: the nights are what their slots learnt; Wednesday 14:00 is not
    assert [(d[2], d[3], d[4], k, s) for d, k, s in alerts_by_time(week2)] == [
        (11, 14, 0, "connect_rate", "command:borg")]


def test_without_seasonality_every_nightly_burst_alerts():
    off = dataclasses.replace(CFG, seasonality=False)
    got = replay(history(2), off)
    assert len([a for a in got if a.subject == "command:borg"]) == 14


def test_profiles_and_the_current_slot_survive_a_restart_mid_week():
    ticks = list(history(2))
    cut = next(i for i, o in enumerate(ticks) if o.time_usec >= at(7, 1) * SEC)  # Monday 01:00, week 2
    d = Detector(CFG, AlertIds(0), 0)
    first = [a for o in ticks[:cut] for a in d.tick(o)]
    saved = {k: np.array(v) for k, v in d.state().items()}
    again = Detector(CFG, AlertIds(1), 0)
    again.load_state(saved)
    after = [a for o in ticks[cut:] for a in again.tick(o)]
    assert len(first) == 7 and after == []  # week 2's nights excused by what week 1 taught
    assert again.seasons["command_connects"].row_keys == ["borg"]


def test_a_new_period_or_slot_learns_again_instead_of_misreading_the_old_profile():
    d = Detector(CFG, AlertIds(0), 0)
    for o in history(1):
        d.tick(o)
    saved = {k: np.array(v) for k, v in d.state().items()}
    daily = dataclasses.replace(CFG, seasonality_period_sec=86400)
    again = Detector(daily, AlertIds(1), 0)
    again.load_state(saved)
    assert again.seasons["command_connects"].row_keys == []


@pytest.mark.parametrize("text, key, problem", [
    ("alerts: {seasonality: 1}", "alerts.seasonality", "expected true or false, got 1"),
    ("alerts: {seasonality_period_sec: 1}", "alerts.seasonality_period_sec", "1 is out of range 2..31622400"),
    ("alerts: {seasonality_slot_sec: 0}", "alerts.seasonality_slot_sec", "0 is out of range 1..86400"),
    ("alerts: {seasonality_weight: 1.5}", "alerts.seasonality_weight", "1.5 is out of range 0.01..1.0"),
    ("alerts: {seasonality_max_keys: 2}", "alerts.seasonality_max_keys", "2 is out of range 16..1000000"),
    ("alerts: {seasonality_slot_sec: 7000}", "alerts.seasonality_slot_sec",
     "7000 does not divide seasonality_period_sec 604800"),
    ("alerts: {seasonality_slot_sec: 1, seasonality_period_sec: 86400}", "alerts.seasonality_slot_sec",
     "1 makes 86400 slots per period (at most 10000)"),
])
def test_seasonality_settings_out_of_range_are_named_config_errors(text, key, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/netwatchd/x.yaml")
    assert str(info.value) == f"/etc/netwatchd/x.yaml: {key}: {problem}"


@pytest.mark.parametrize("bounds", [{"baseline_idle_sec": 86400}, {"max_baseline_keys": 3}], ids=["idle", "cap"])
def test_profiles_follow_their_keys_when_the_table_removes_others(bounds):
    """alerts.baseline_idle_sec / max_baseline_keys (issue 21): a one-off command that alerted
    (so it has a profile row) and sits before borg in the table goes -- idle for a day, or pushed
    out by a newcomer at the cap -- and borg's profile still excuses its nights in week 2."""
    cfg = dataclasses.replace(CFG, **bounds)
    d = Detector(cfg, AlertIds(0), 0)
    got = []
    for n, o in enumerate(history(2)):
        first = {"oneoff": 5000} if n == 0 else {}
        newcomer = {"newcomer": 1} if o.time_usec >= at(1, 12) * SEC else {}
        got += d.tick(dataclasses.replace(o, command_connects={**first, **o.command_connects, **newcomer}))
    borg = [a for a in got if a.subject == "command:borg"]
    assert [time.localtime(a.timestamp_usec // SEC)[2:5] for a in borg] == [(2 + n, 2, 0) for n in range(7)]
    assert [a.subject for a in got if a.subject != "command:borg"] == ["command:oneoff"]
    table, season = d.tables["command_connects"], d.seasons["command_connects"]
    assert table.slot("oneoff") is None and table.slot("borg") == 0
    assert (season.row_keys, season.row_slot, season.dropped_rows) == (["borg"], [0], 1)
