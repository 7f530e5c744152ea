"""Issue 21's bounds on what devices and local users can add to the detector: baseline keys idle
longer than alerts.baseline_idle_sec go, at most alerts.max_baseline_keys per table (longest
idle first, never a key of the same tick; a flood of new keys beyond the cap in one tick is
counted, the largest taken), spent cooldowns are forgotten, and all of it survives a restart."""
import dataclasses

import numpy as np

from netwatchd.alerting.alerts import AlertIds
from netwatchd.alerting.detector import Detector
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.seasonality import SeasonalProfile
from netwatchd.config import AlertsConfig

SEC = 1_000_000
T0 = 1_699_999_980  # a whole minute: the detector prunes on the first tick of each minute
CFG = dataclasses.replace(AlertsConfig(), learning_period_sec=0, warmup_ticks=20, cooldown_sec=60,
                          baseline_idle_sec=600)


def detector(cfg=CFG):
    return Detector(cfg, AlertIds(0), learning_until_usec=0)


def at(sec, **commands):
    return TickObservation(time_usec=(T0 + sec) * SEC, command_connects=commands)


def commands(d):
    t = d.tables["command_connects"]
    return sorted(t.key(i) for i in range(len(t)))


def test_a_key_idle_longer_than_baseline_idle_sec_goes_and_an_active_one_stays():
    d = detector()
    d.tick(at(0, cron=5, curl=3))
    for sec in range(10, 660, 10):  # cron is 0 (present as 0, or absent): idle all the same
        d.tick(at(sec, curl=3, **({"cron": 0} if sec % 20 else {})))
    assert commands(d) == ["cron", "curl"]  # 650 s idle, but pruning waits for the next minute
    d.tick(at(660, curl=3))
    assert commands(d) == ["curl"]
    t = d.tables["command_connects"]
    assert (t.pruned, t.evicted, t.refused) == (1, 0, 0)
    assert t.stats("curl")[2] == 67  # its baseline moved with it: every tick counted
    d.tick(at(670, cron=5))  # back: a new key, learning afresh
    assert commands(d) == ["cron", "curl"] and t.stats("cron")[2] == 1


def test_time_nothing_was_watched_is_not_idle_time_also_across_a_restart():
    d = detector()
    d.tick(at(0, backup=9))
    d.tick(at(10))
    saved = {k: np.array(v) for k, v in d.state().items()}
    again = detector()
    again.load_state(saved)
    assert again.tables["command_connects"].state()["last_seen"].tolist() == [0]
    month = 30 * 86400
    again.tick(at(month))  # a month switched off counts as at most 120 s
    assert commands(again) == ["backup"]
    for sec in range(month + 60, month + 480, 60):
        again.tick(at(sec))
    assert commands(again) == ["backup"]  # 10 + 120 + 420 = 550 s watched: not yet idle too long
    again.tick(at(month + 480))  # 610 s
    assert commands(again) == []
    assert again.tables["command_connects"].pruned == 1


def test_a_state_saved_before_idle_times_loads_and_its_keys_idle_from_the_first_tick():
    d = detector()
    d.tick(at(0, old=4))
    saved = {k: np.array(v) for k, v in d.state().items() if k not in ("command_connects.last_seen", "watch")}
    again = detector()
    again.load_state(saved)
    assert again.tables["command_connects"].stats("old")[2] == 1
    again.tick(at(10_000))  # long after it was saved: still stamped as seen now
    for sec in range(10_060, 10_660, 60):
        again.tick(at(sec))
    assert commands(again) == ["old"]  # 600 s idle on the clock, not longer
    again.tick(at(10_660))
    assert commands(again) == []


def test_the_cap_evicts_the_longest_idle_and_never_a_key_of_this_tick():
    d = detector(dataclasses.replace(CFG, max_baseline_keys=4))
    d.tick(at(0, a=1, b=1))
    d.tick(at(1, c=1))
    d.tick(at(2, d=1))
    d.tick(at(3, e=1, a=1))  # full: b (idle longest) goes for e; a is in this tick
    assert commands(d) == ["a", "c", "d", "e"]
    d.tick(at(4, f=5, g=1, h=3, i=3, j=2))  # five new for four places: all idle go, g waits
    assert commands(d) == ["f", "h", "i", "j"]
    d.tick(at(5, f=1, h=1, i=1, j=1, k=100))  # no place without removing a key of this tick
    assert commands(d) == ["f", "h", "i", "j"]
    t = d.tables["command_connects"]
    assert (t.pruned, t.evicted, t.refused) == (0, 5, 2)
    assert t.stats("f")[2] == 2  # its baseline kept its slot's history through the compaction
    counts = d.pruned_counts()
    assert {k: v for k, v in counts.items() if k.startswith("command_connects.")} == {
        "command_connects.pruned": 0, "command_connects.evicted": 5, "command_connects.refused": 2,
        "command_connects.keys": 4}


def test_a_lowered_cap_is_applied_at_the_next_prune_longest_idle_first():
    d = detector()
    for n in range(6):
        d.tick(at(n, **{f"k{n}": 1}))
    d.tick(at(60, k2=1))
    assert commands(d) == ["k0", "k1", "k2", "k3", "k4", "k5"]
    table = d.tables["command_connects"]
    assert table.prune(d.watched_usec, 600 * SEC, 6) is None  # nothing idle, not over: nothing moves
    d.reconfigure(dataclasses.replace(CFG, max_baseline_keys=3), 0)  # (below the config's bound)
    d.tick(at(90))
    assert commands(d) == ["k0", "k1", "k2", "k3", "k4", "k5"]  # the same minute: not yet
    d.tick(at(120))
    assert commands(d) == ["k2", "k4", "k5"] and (table.pruned, table.evicted) == (0, 3)
    assert [table.slot(k) for k in ("k2", "k4", "k5")] == [0, 1, 2]


def test_200k_command_names_minted_in_one_tick_are_bounded_counted_and_hide_no_storm():
    """A local user makes 200k command names in one tick: the table keeps max_baseline_keys, the
    commands of that tick keep their baselines, the biggest counts are taken (one storms)."""
    d = detector(dataclasses.replace(CFG, max_baseline_keys=100_000))
    for sec in range(30):
        d.tick(at(sec, curl=3, sshd=1, **({"backup": 2} if sec == 0 else {})))
    minted = {f"x{n}": 1 for n in range(200_000)}
    minted["x150000"] = 5000  # a storm among them
    alerts = d.tick(TickObservation(time_usec=(T0 + 30) * SEC, command_connects={"curl": 3, "sshd": 1, **minted}))
    t = d.tables["command_connects"]
    assert len(t) == 100_000
    assert t.slot("curl") is not None and t.stats("curl")[2] == 31  # never dropped for a new one
    assert t.slot("backup") is None  # idle, not in the tick: made room
    assert (t.evicted, t.refused) == (1, 200_000 - (100_000 - 2))
    assert t.slot("x150000") is not None
    assert [(a.kind, a.subject) for a in alerts] == [("connect_rate", "command:x150000")]
    assert t.slot("x0") is not None and t.slot("x99996") is not None and t.slot("x99997") is None  # ties: first seen


def test_spent_cooldowns_are_forgotten_and_a_live_one_still_holds():
    d = detector()
    storm = {f"cmd-{n}": 5000 for n in range(300)}
    assert len(d.tick(at(0, **storm))) == 300  # a cold burst each: 300 alerts, 300 cooldowns
    assert len(d.last_alert_usec) == 300
    assert d.tick(at(30, **{"cmd-0": 5000})) == []  # within the cooldown
    d.tick(at(50))
    assert len(d.last_alert_usec) == 300
    d.tick(at(60))  # a minute on: every one of them is spent
    assert d.last_alert_usec == {} and d.cooldowns_pruned == 300
    (again,) = d.tick(at(70, **{"cmd-0": 5000}))
    assert (again.kind, again.subject) == ("connect_rate", "command:cmd-0")
    assert list(d.last_alert_usec) == [("connect_rate", "command:cmd-0")]


def test_spent_cooldowns_are_not_loaded_back():
    d = detector()
    d.last_alert_usec = {("connect_rate", f"command:cmd-{n}"): T0 * SEC for n in range(50)}
    d.last_alert_usec[("connect_rate", "command:late")] = (T0 + 90) * SEC
    saved = {k: np.array(v) for k, v in d.state().items()}
    assert len(saved["cooldown.kind"]) == 51
    again = detector()
    again.load_state(saved)
    assert list(again.last_alert_usec) == [("connect_rate", "command:late")]


def test_seasonal_rows_follow_their_keys_and_go_with_them():
    season = SeasonalProfile(604800, 3600, 0.3, 16)
    season.accumulate(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    for slot, key in ((1, "b"), (3, "d"), (5, "f")):
        season.adopt(key, slot)
    season.mean[:3, 0] = [10, 30, 50]
    season.remap(np.array([-1, 0, 1, -1, 2, 3]))  # a and d removed
    assert (season.row_keys, season.row_slot, season.row_of) == (["b", "f"], [0, 3], {0: 0, 3: 1})
    assert season.mean[:2, 0].tolist() == [10, 50] and season.mean[2, 0] == 0
    assert season.total[:4].tolist() == [2.0, 3.0, 5.0, 6.0] and season.total[4:].sum() == 0
    assert season.dropped_rows == 1


def test_a_restart_prunes_at_the_same_ticks_as_a_run_without_one():
    """So `netwatchctl replay` over the recorded ticks (one run) decides as the restarted daemon did."""
    ticks = [at(0, a=1, b=1)] + [at(sec, b=1) for sec in range(10, 700, 10)]
    straight, restarted = detector(), detector()
    kept_straight, kept_restarted = [], []
    for o in ticks:
        straight.tick(o)
        kept_straight.append(commands(straight))
        restarted.tick(o)
        kept_restarted.append(commands(restarted))
        if o.time_usec == (T0 + 600) * SEC:  # saved and started again mid-minute
            saved = {k: np.array(v) for k, v in restarted.state().items()}
            restarted = detector()
            restarted.load_state(saved)
    assert kept_restarted == kept_straight
    assert kept_straight.index(["b"]) == 66  # 660 s: the first prune after 600 s idle
