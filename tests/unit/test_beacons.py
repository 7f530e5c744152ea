"""Beacons, the pure parts: the allow-list and its config errors, the regularity score, the pair
table (bounds, eviction, horizon, one alert per beacon), the device starts from kernel readings,
connect records as starts, and replay finding what the live pipeline found."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from netwatchd.alerting.alerts import Alert, AlertIds
from netwatchd.alerting.beacon_score import regularity
from netwatchd.alerting.beacons import KEEP, BeaconTracker
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.replay import replay
from netwatchd.beacon_allow import AllowList, parse_destination
from netwatchd.config import AlertsConfig, BeaconsConfig, ConfigError, parse_config
from netwatchd.devices.beacon_starts import DeviceStarts

SRC = "/etc/netwatchd/test.yaml"
T0 = 1_700_000_000.0
DEFAULTS = BeaconsConfig()


def calls(intervals, start=T0):
    return start + np.concatenate([[0.0], np.cumsum(intervals)])


def periodic(n, period=2.0, jitter=0.25, seed=1):
    rng = np.random.default_rng(seed)
    return period * (1 + jitter * rng.uniform(-1, 1, n))


def run(tracker, pairs, ticks=None, tick=1.0, cooldown=600, names=None):
    """Feeds {pair: start times (s)} tick by tick, with {pair: DNS name} if given; returns
    [(tick time, alert)]."""
    end = max(max(t) for t in pairs.values()) + 2
    ids, out, now = AlertIds(0), [], T0
    while now <= end:
        starts = []
        for (source, dest, port), times in pairs.items():
            when = [int(t * 1e6) for t in times if now - tick < t <= now]
            if when:
                starts.append([source, dest, port, (names or {}).get((source, dest, port), ""), when])
        out += [(now, a) for a in tracker.tick(starts, int(now * 1e6), ids, True, cooldown)]
        now += tick
    return out


# -- allow-list and its config errors -------------------------------------------------------------

@pytest.mark.parametrize("entry, address, port, allowed", [
    ("192.0.2.0/24", "192.0.2.9", 443, True),
    ("192.0.2.0/24", "192.0.3.9", 443, False),
    ("192.0.2.1:443", "192.0.2.1", 443, True),
    ("192.0.2.1:443", "192.0.2.1", 80, False),
    ("10.0.0.0/8:53", "10.1.2.3", 53, True),
    ("[2001:db8::/32]:443", "2001:db8::5", 443, True),
    ("[2001:db8::/32]:443", "192.0.2.1", 443, False),
    ("[::1]:53", "::1", 53, True),
    ("fd00::/8", "fd12::1", 9, True),
    ("*:123", "203.0.113.7", 123, True),
    ("*:123", "203.0.113.7", 124, False),
])
def test_destination_entries(entry, address, port, allowed):
    assert parse_destination(entry).matches(address, port) is allowed


def test_names_with_wildcards_and_commands():
    allow = AllowList(names=["*.debian.org", "ntp.ubuntu.com"], commands=["chronyd"], trust_names=True)
    assert allow.allows("device:02:00:00:00:00:01", "198.51.100.1", 443, "deb.debian.org")
    assert allow.allows("command:x", "198.51.100.1", 443, "Security.Debian.Org.")
    assert not allow.allows("command:x", "198.51.100.1", 443, "debian.org")  # the domain itself is not under it
    assert allow.allows("command:x", "198.51.100.1", 443, "ntp.ubuntu.com")
    assert not allow.allows("command:x", "198.51.100.1", 443, "xntp.ubuntu.com")
    assert allow.allows("command:chronyd", "198.51.100.1", 123)
    assert not allow.allows("device:chronyd", "198.51.100.1", 123)  # commands name commands only
    untrusted = AllowList(names=["*.debian.org"], commands=["chronyd"])  # names from DNS: not by default
    assert not untrusted.allows("device:02:00:00:00:00:01", "198.51.100.1", 443, "deb.debian.org")
    assert untrusted.allows("command:chronyd", "198.51.100.1", 123, "deb.debian.org")


def config_error(key: str, entries: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(f"beacons:\n  {key}: {entries}\n", SRC)
    return info.value


@pytest.mark.parametrize("key, entries, path, problem", [
    ("allow_destinations", '["10.0.0.1", "example.com"]', "beacons.allow_destinations[1]",
     "'example.com' is not an IP address or CIDR with an optional port"),
    ("allow_destinations", '["10.0.0.0/33"]', "beacons.allow_destinations[0]", "'10.0.0.0/33' is not an IP address"),
    ("allow_destinations", '["10.0.0.1:0"]', "beacons.allow_destinations[0]", "'10.0.0.1:0': port '0' is not 1..65535"),
    ("allow_destinations", '["[::1]:http"]', "beacons.allow_destinations[0]", "'[::1]:http': port 'http' is not 1..65535"),
    ("allow_destinations", '["*"]', "beacons.allow_destinations[0]", "'*': '*' needs a port (*:123)"),
    ("allow_destinations", '"10.0.0.1"', "beacons.allow_destinations", "expected a list, got '10.0.0.1'"),
    ("allow_names", '["*.debian.org", "bad name"]', "beacons.allow_names[1]", "'bad name' is not a DNS name"),
    ("allow_names", '["a..b"]', "beacons.allow_names[0]", "'a..b' is not a DNS name"),
    ("allow_names", '["10.0.0.1:53"]', "beacons.allow_names[0]", "'10.0.0.1:53' is not a DNS name"),
    ("allow_commands", '["/usr/bin/curl"]', "beacons.allow_commands[0]", "'/usr/bin/curl' is not a command name"),
    ("allow_commands", '["a-command-name-too-long"]', "beacons.allow_commands[0]", "is not a command name as the kernel keeps it: 1 to 15 bytes"),
    ("allow_commands", '[42]', "beacons.allow_commands[0]", "42 is not a command name"),
    ("allow_commands", '["a\\\\b"]', "beacons.allow_commands[0]", "written as netwatchd shows it"),
    ("allow_commands", '["\\e[31m"]', "beacons.allow_commands[0]", "written as netwatchd shows it"),
])
def test_bad_allow_list_entries_are_named_config_errors(key, entries, path, problem):
    e = config_error(key, entries)
    assert e.key_path == path
    assert problem in e.problem, e.problem
    assert str(e).startswith(f"{SRC}: {path}: ")


def test_good_allow_lists_parse_and_an_empty_one_means_none():
    cfg = parse_config("beacons:\n  allow_destinations: ['[fd00::/8]:443', '*:123']\n  allow_names:\n", SRC)
    assert cfg.beacons.allow_destinations == ("[fd00::/8]:443", "*:123")
    assert cfg.beacons.allow_names == ()


def test_allow_commands_take_names_as_netwatchd_shows_them():
    # 12 bytes in the kernel, 18 characters as shown (YAML single quotes keep backslashes)
    cfg = parse_config("beacons:\n  allow_commands: ['\\x1b[31mRED\\x1b[0m', 'a\\\\b']\n", SRC)
    assert cfg.beacons.allow_commands == (r"\x1b[31mRED\x1b[0m", r"a\\b")


# -- the score ------------------------------------------------------------------------------------

def test_a_timer_scores_high_random_times_low():
    rows = np.full((4, 31), np.nan)
    rows[0, :30] = 2.0  # exact timer
    rows[1, :30] = periodic(30, jitter=0.25)
    rows[2, :30] = np.random.default_rng(3).exponential(2.0, 30)
    rows[3, :3] = [2.0, 2.0, 2.0]  # too few to count fully
    r = regularity(rows)
    assert r.count.tolist() == [30, 30, 30, 3]
    assert r.period[0] == 2.0 and r.jitter[0] == 0.0 and r.skew[0] == 0.0 and r.score[0] == 1.0
    assert abs(r.period[1] - 2.0) < 0.2 and 0.15 < r.jitter[1] < 0.35 and r.score[1] >= 0.85
    assert r.score[2] < 0.7
    assert r.score[3] == pytest.approx((1 + 3 + 3 / 16) / 5)


# -- the table ------------------------------------------------------------------------------------

def test_one_alert_per_beacon_within_twenty_periods_and_none_for_random_times():
    tracker = BeaconTracker(DEFAULTS)
    beacon = calls(periodic(40))
    random_times = calls(np.random.default_rng(7).exponential(2.0, 40))
    found = run(tracker, {("command:beac", "203.0.113.5", 443): beacon,
                          ("command:rand", "203.0.113.6", 443): random_times})
    assert [(a.kind, a.subject) for _, a in found] == [("beacon", "command:beac")]
    when, alert = found[0]
    periods = int(np.sum(beacon <= when)) - 1
    assert DEFAULTS.min_connections - 1 <= periods <= 20
    assert alert.details["destination"] == "203.0.113.5:443" and alert.details["command"] == "beac"
    assert abs(float(alert.details["period_sec"]) - 2.0) < 0.25


def test_allow_listed_and_too_fast_pairs_never_alert():
    tracker = BeaconTracker(DEFAULTS)
    found = run(tracker, {("command:dig", "127.0.0.53", 53): calls(periodic(30)),  # the shipped allow-list
                          ("device:02:00:00:00:00:01", "198.51.100.1", 123): calls(periodic(30)),
                          ("command:poll", "198.51.100.2", 80): calls(np.full(60, 0.5))},  # under min_period_sec
                tick=0.25)
    assert found == []


def test_periodic_dns_to_the_lan_s_resolver_is_no_beacon_to_a_public_address_it_is():
    """Issue 23: a device's lookups through the router every 2 s (README, "Beacons": port 53 on
    private, ULA and link-local addresses is allowed as shipped); the same to a public address
    on port 53 is a beacon."""
    shipped = parse_config("").beacons
    lan = [("device:00:16:3e:00:00:01", ip, 53) for ip in ("192.168.1.1", "10.0.0.1", "172.16.5.1",
                                                           "fd00::1", "fe80::1")]
    found = run(BeaconTracker(shipped), {pair: calls(periodic(30, seed=n)) for n, pair in enumerate(lan)})
    assert found == []
    public = ("device:00:16:3e:00:00:01", "198.51.100.53", 53)
    (alert,) = [a for _, a in run(BeaconTracker(shipped), {public: calls(periodic(30))})]
    assert alert.kind == "beacon" and alert.details["port"] == "53"


def test_tracked_pairs_cost_no_allow_list_memo_and_allowed_ones_stay_untracked():
    """Memory with many distinct flows: a pair that is not allowed is found through the pair table,
    and the allow list is asked per rule and per distinct source each tick (no memo of its answers
    per pair): an allowed pair is never tracked, a tracked one costs its slot only."""
    tracker = BeaconTracker(DEFAULTS)
    starts = [["command:nwflows", f"198.51.{k >> 8}.{k & 255}", 443, "", [int(T0 * 1e6)]] for k in range(5000)]
    starts += [["command:dig", "127.0.0.53", 53, "", [int(T0 * 1e6)]]]  # the shipped allow-list
    for tick in range(3):
        tracker.tick(starts, int((T0 + tick) * 1e6), AlertIds(0))
    assert len(tracker) == 5000
    assert ("command:dig", "127.0.0.53", 53) not in tracker and ("command:nwflows", "198.51.0.7", 443) in tracker
    assert tracker.memory_bytes() <= 5000 * 128  # capacity grown an eighth ahead included


def test_ipv6_destinations_are_written_in_brackets():
    found = run(BeaconTracker(DEFAULTS), {("device:02:00:00:00:00:01", "2001:db8::1", 443): calls(periodic(30))})
    ((_, alert),) = found
    assert alert.details["destination"] == "[2001:db8::1]:443" and alert.details["mac"] == "02:00:00:00:00:01"


def test_starts_older_than_the_horizon_do_not_count():
    cfg = dataclasses.replace(DEFAULTS, horizon_sec=60)
    tracker = BeaconTracker(cfg)
    slow = calls(np.full(20, 10.0))  # one every 10 s: only 6 within a 60 s horizon, never enough
    assert run(tracker, {("command:slow", "198.51.100.3", 443): slow}) == []
    assert len(tracker) == 1


def test_the_table_is_bounded_and_drops_the_least_evidence_first():
    cfg = dataclasses.replace(DEFAULTS, max_pairs=64)
    tracker = BeaconTracker(cfg, capacity=16)
    ids = AlertIds(0)
    beacon = calls(periodic(30))
    for n, t in enumerate(beacon):
        now = int(t * 1e6)
        starts = [["command:beac", "203.0.113.5", 443, "", [now]]]
        # 10 new one-off pairs every start: 300 in all, for 64 places
        starts += [["command:noise", f"198.51.{n}.{k}", 80, "", [now]] for k in range(10)]
        alerts = tracker.tick(starts, now + 1, ids)
        assert len(tracker) <= 64
        if alerts:
            break
    assert [a.subject for a in alerts] == ["command:beac"]  # its evidence kept it in the table
    assert tracker.dropped > 0
    assert tracker.memory_bytes() <= 64 * (KEEP * 4 + 40)


def test_a_restart_does_not_report_the_same_beacon_again_within_the_cooldown():
    first = run(BeaconTracker(DEFAULTS), {("command:beac", "203.0.113.5", 443): calls(periodic(40))})
    ((_, alert),) = first
    tracker = BeaconTracker(DEFAULTS)
    tracker.remember_alerts([alert])
    later = calls(periodic(40, seed=2), start=T0 + 100)
    assert run(tracker, {("command:beac", "203.0.113.5", 443): later}) == []


# -- the sources ---------------------------------------------------------------------------------

def test_device_starts_from_kernel_readings():
    starts = DeviceStarts(boot_to_realtime_ns=1_000_000_000)
    key = ("02:00:00:00:00:01", "10.0.0.2", 443)
    starts.read({key: (5_000_000, 0, 1)})
    starts.read({key: (5_000_000, 0, 1)})  # nothing new
    assert starts.take(lambda mac, a: "c2.example") == [["device:02:00:00:00:00:01", "10.0.0.2", 443, "c2.example", [1_005_000]]]
    starts.read({key: (9_000_000, 7_000_000, 3)})  # two new starts in one reading: both exact
    assert starts.take(lambda mac, a: "")[0][4] == [1_007_000, 1_009_000]
    starts.read({key: (20_000_000, 18_000_000, 7)})  # four: the two known, two spread before them
    assert starts.take(lambda mac, a: "")[0][4] == [1_012_000, 1_015_000, 1_018_000, 1_020_000]
    starts.read({})  # the LRU dropped it: forgotten, and counted afresh when it comes back
    starts.read({key: (30_000_000, 0, 1)})
    assert starts.take(lambda mac, a: "")[0][4] == [1_030_000]


def test_replay_finds_the_beacon_the_live_pipeline_found():
    beacon = calls(periodic(30))
    observations = []
    now = T0
    while now <= beacon[-1] + 2:
        when = [int(t * 1e6) for t in beacon if now - 1 < t <= now]
        obs = TickObservation(time_usec=int(now * 1e6))
        if when:
            obs.connection_starts.append(["command:beac", "203.0.113.5", 443, "", when])
        observations.append(TickObservation.from_json(obs.to_json()))  # as the history stores it
        now += 1
    live = run(BeaconTracker(DEFAULTS), {("command:beac", "203.0.113.5", 443): beacon})
    replayed = replay(observations, AlertsConfig(learning_period_sec=0), DEFAULTS)
    assert [(a.subject, a.timestamp_usec, a.details) for a in replayed] == \
        [(a.subject, a.timestamp_usec, a.details) for _, a in live]
    allowed = dataclasses.replace(DEFAULTS, allow_commands=("beac",))
    assert replay(observations, AlertsConfig(learning_period_sec=0), allowed) == []
    assert isinstance(replayed[0], Alert) and replayed[0].kind == "beacon"


def beacon_history(n=40):
    beacon = calls(periodic(n))
    now, out = T0, []
    while now <= beacon[-1] + 2:
        obs = TickObservation(time_usec=int(now * 1e6))
        when = [int(t * 1e6) for t in beacon if now - 1 < t <= now]
        if when:
            obs.connection_starts.append(["device:02:00:00:00:00:07", "198.51.100.9", 8443, "c2.example", when])
        out.append(obs)
        now += 1
    return out


def test_netwatchctl_replay_finds_beacons_and_uses_the_files_allow_list(tmp_path, capsys):
    from netwatchd.ctl.main import main as ctl_main
    from tests.unit.test_replay import record, write_config

    record(tmp_path, beacon_history())
    config = write_config(tmp_path, "alerts:\n  learning_period_sec: 0\n")
    assert ctl_main(["replay", "--config", config, "--state-dir", str(tmp_path), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ((alert), summary) = lines
    assert (alert["kind"], alert["subject"], alert["details"]["destination"], alert["details"]["name"]) == \
        ("beacon", "device:02:00:00:00:00:07", "198.51.100.9:8443", "c2.example")
    assert summary["summary"]["alerts_per_kind"] == {"beacon": 1}
    named = write_config(tmp_path, "alerts:\n  learning_period_sec: 0\nbeacons:\n  allow_names: ['*.example']\n")
    assert ctl_main(["replay", "--config", named, "--state-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]["alerts"] == 1  # DNS names untrusted
    allowed = write_config(tmp_path, "alerts:\n  learning_period_sec: 0\nbeacons:\n  allow_names: ['*.example']\n"
                                     "  trust_dns_names: true\n")
    assert ctl_main(["replay", "--config", allowed, "--state-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]["alerts"] == 0


def test_a_reload_that_allows_a_tracked_pair_silences_it_at_once():
    tracker = BeaconTracker(DEFAULTS)
    beacon = calls(periodic(40))
    first = {("command:agent", "198.51.100.4", 9000): beacon[:8]}
    assert run(tracker, first) == [] and len(tracker) == 1
    tracker.reconfigure(dataclasses.replace(DEFAULTS, allow_commands=("agent",)))
    assert len(tracker) == 0
    assert run(tracker, {("command:agent", "198.51.100.4", 9000): beacon[8:]}) == []


def test_more_new_pairs_in_one_tick_than_places_are_counted_not_fatal():
    tracker = BeaconTracker(dataclasses.replace(DEFAULTS, max_pairs=16), capacity=16)
    starts = [["command:fan", f"198.51.100.{k}", 80, "", [int(T0 * 1e6)]] for k in range(20)]
    assert tracker.tick(starts, int(T0 * 1e6) + 1, AlertIds(0)) == []
    assert len(tracker) == 16 and tracker.dropped == 4


def test_a_pair_idle_past_the_horizon_starts_afresh():
    cfg = dataclasses.replace(DEFAULTS, horizon_sec=60)
    tracker = BeaconTracker(cfg)
    first = calls(periodic(5))
    later = calls(periodic(30), start=first[-1] + 500)
    found = run(tracker, {("command:b", "198.51.100.5", 443): np.concatenate([first, later])})
    assert [a.subject for _, a in found] == ["command:b"]


def test_connects_of_one_pair_microseconds_apart_are_one_start():
    """getaddrinfo()'s UDP connect and the TCP connect right after it: one start, so a beacon
    that resolves its name each time is still found."""
    beacon = calls(periodic(30))
    doubled = np.sort(np.concatenate([beacon, beacon + 0.0004]))
    found = run(BeaconTracker(DEFAULTS), {("command:curl", "203.0.113.5", 443): doubled})
    ((_, alert),) = found
    assert abs(float(alert.details["period_sec"]) - 2.0) < 0.25


def test_dns_names_allow_nothing_unless_trusted():
    """beacons.trust_dns_names: the names come from DNS answers a device (or whoever answers its
    queries) chooses, so the shipped allow_names ("*.ubuntu.com") allow nothing by default."""
    beacon = calls(periodic(40))
    ubuntu = ("device:02:00:00:00:00:09", "198.51.100.7", 443)
    other = ("device:02:00:00:00:00:09", "198.51.100.8", 443)
    names = {ubuntu: "security.ubuntu.com", other: "c2.example"}
    assert DEFAULTS.trust_dns_names is False and "*.ubuntu.com" in DEFAULTS.allow_names
    shipped = run(BeaconTracker(DEFAULTS), {ubuntu: beacon}, names=names)
    ((_, alert),) = shipped
    assert (alert.subject, alert.details["destination"], alert.details["name"]) == \
        ("device:02:00:00:00:00:09", "198.51.100.7:443", "security.ubuntu.com")
    assert "198.51.100.7:443 (security.ubuntu.com)" in alert.message
    trusting = BeaconTracker(dataclasses.replace(DEFAULTS, trust_dns_names=True))
    trusted = run(trusting, {ubuntu: beacon, other: beacon}, names=names)
    assert [(a.details["destination"], a.details["name"]) for _, a in trusted] == [("198.51.100.8:443", "c2.example")]
    assert len(trusting) == 1  # the allowed pair is not even tracked


def test_reported_beacons_are_forgotten_once_their_cooldown_is_spent():
    tracker = BeaconTracker(DEFAULTS)
    ((when, _),) = run(tracker, {("command:beac", "203.0.113.5", 443): calls(periodic(40))}, cooldown=600)
    assert list(tracker.reported) == [("command:beac", "203.0.113.5:443")]
    tracker.tick([], int((when + 599) * 1e6), AlertIds(0), True, 600)  # still cooling: kept
    assert list(tracker.reported) == [("command:beac", "203.0.113.5:443")]
    tracker.tick([], int((when + 660) * 1e6), AlertIds(0), True, 600)  # spent: it suppresses nothing
    assert tracker.reported == {}
