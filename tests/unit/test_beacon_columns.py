"""Beacons over columns (issue 24): StartColumns and its JSON, TickObservation.command_starts in
the history, the allow-list over columns against AllowList.allows, and the tracker at 100k pairs
(a tick of all new pairs then of repeats: the same alerts from columns as from lists, the
regularity of the exact intervals, at most 100 bytes a pair), hash collisions, the clock."""
from __future__ import annotations

import base64
import dataclasses
import ipaddress
import json

import numpy as np
import pytest

from netwatchd.alerting.alerts import AlertIds
from netwatchd.alerting.allow_columns import AllowColumns, halves
from netwatchd.alerting.beacon_score import regularity
from netwatchd.alerting.beacons import COALESCE_FRACTION, BeaconTracker
from netwatchd.alerting.core import AlertingCore
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.pair_table import PairTable
from netwatchd.start_columns import StartColumns
from netwatchd.beacon_allow import AllowList
from netwatchd.config import BeaconsConfig

SEC = 1_000_000
T0 = 1_700_000_000 * SEC
DEFAULTS = BeaconsConfig()
LISTS = [["command:curl", "198.51.100.7", 443, "", [T0 + 5, T0 + 1]],
         ["device:02:00:00:00:00:01", "2001:db8::1", 8443, "c2.example", [T0 + 2]],
         ["command:curl", "::ffff:10.1.2.3", 80, "", [T0 + 3]],
         ["command:dig", "not an address", 53, "", [T0 + 4]],  # left out
         ["command:dig", "127.0.0.53", 53, "", []]]  # no start: no row


def test_start_columns_from_lists_and_back_as_text():
    cols = StartColumns.from_lists(LISTS)
    assert len(cols) == 4 and cols.sources == ["command:curl", "device:02:00:00:00:00:01"]
    assert cols.source.tolist() == [0, 0, 1, 0] and cols.family.tolist() == [4, 4, 6, 6]
    assert cols.port.tolist() == [443, 443, 8443, 80] and cols.time_usec.tolist() == [T0 + 5, T0 + 1, T0 + 2, T0 + 3]
    assert cols.names == {2: "c2.example"}
    assert [cols.address_text(r) for r in range(4)] == ["198.51.100.7", "198.51.100.7", "2001:db8::1",
                                                        str(ipaddress.IPv6Address("::ffff:10.1.2.3"))]
    assert cols.address[0].tolist() == [198, 51, 100, 7] + [0] * 12
    assert cols.source.dtype == np.int32 and cols.address.shape == (4, 16) and cols.time_usec.dtype == np.int64
    assert len(StartColumns.from_lists([])) == 0 and StartColumns.from_lists([]) == StartColumns.empty()


def test_start_columns_round_trip_through_json_and_concat():
    cols = StartColumns.from_lists(LISTS)
    text = json.dumps(cols.to_json_value())
    assert StartColumns.from_json_value(json.loads(text)) == cols
    assert StartColumns.from_json_value(StartColumns.empty().to_json_value()) == StartColumns.empty()
    more = StartColumns.from_lists([["device:02:00:00:00:00:01", "10.0.0.1", 53, "dns.example", [T0]],
                                    ["command:nc", "10.0.0.2", 22, "", [T0 + 9]]])
    both = StartColumns.concat([cols, StartColumns.empty(), more])
    assert len(both) == 6 and both.sources == ["command:curl", "device:02:00:00:00:00:01", "command:nc"]
    assert [both.sources[s] for s in both.source] == ["command:curl"] * 2 + ["device:02:00:00:00:00:01",
                                                                             "command:curl",
                                                                             "device:02:00:00:00:00:01", "command:nc"]
    assert both.names == {2: "c2.example", 4: "dns.example"} and both.address_text(5) == "10.0.0.2"
    with pytest.raises(ValueError):
        StartColumns.from_json_value({**cols.to_json_value(), "port": b64([1], "<u2")})


def test_command_starts_in_the_history_and_histories_written_before_them():
    columns = StartColumns.from_lists(LISTS[:3])
    obs = TickObservation(time_usec=T0, connection_starts=[LISTS[1]], command_starts=columns)
    back = TickObservation.from_json(obs.to_json())
    assert back == obs and back.command_starts == columns
    old = '{"connection_starts":[["command:curl","198.51.100.7",443,"",[1]]],"time_usec":5}'
    read = TickObservation.from_json(old)
    assert len(read.command_starts) == 0 and read.connection_starts[0][0] == "command:curl"
    assert TickObservation.from_json(read.to_json()).to_json() == old  # written as before: no empty columns
    starts = AlertingCore.starts(obs)  # what the tracker gets: the device lists, then the commands' columns
    assert len(starts) == 1 + len(columns) and starts.sources[int(starts.source[0])] == "device:02:00:00:00:00:01"


# -- the allow-list over columns ------------------------------------------------------------------

RULES = ("192.0.2.0/24", "198.51.100.7:443", "10.0.0.0/8:53", "[2001:db8::/32]:443", "[::1]:53", "fd00::/8",
         "*:123", "203.0.113.128/25:8080", "[2001:db8:ffff::1/128]:22", "0.0.0.0/1:7")


@pytest.mark.parametrize("trust", [False, True])
def test_allow_columns_agree_with_allow_list(trust):
    rng = np.random.default_rng(5)
    allow = AllowList(RULES, ["*.example.org", "ntp.example"], ["chronyd", "a\\\\b"], trust)
    addresses = ["192.0.2.1", "192.0.3.1", "198.51.100.7", "198.51.100.8", "10.9.8.7", "11.0.0.1", "2001:db8::5",
                 "2001:db9::5", "::1", "::2", "fd12::1", "fe80::1", "203.0.113.200", "203.0.113.100",
                 "2001:db8:ffff::1", "2001:db8:ffff::2", "::ffff:10.1.2.3", "::ffff:192.0.2.1", "127.0.0.1",
                 "100.1.1.1", "200.1.1.1", "0.0.0.0", "255.255.255.255"]
    addresses += [str(ipaddress.IPv4Address(int(x))) for x in rng.integers(0, 2**32, 40)]
    addresses += [str(ipaddress.IPv6Address(int(x) << 64)) for x in rng.integers(0, 2**63, 20)]
    sources = ["command:chronyd", "command:curl", "device:chronyd", "command:a\\\\b", "device:02:00:00:00:00:01"]
    names = ["", "", "deb.example.org", "example.org", "ntp.example", "NTP.Example.", "c2.example"]
    entries = [[sources[rng.integers(len(sources))], a, int(rng.choice([7, 22, 53, 123, 443, 8080, 9])),
                names[rng.integers(len(names))], [T0]] for a in addresses for _ in range(6)]
    cols = StartColumns.from_lists(entries)
    got = AllowColumns(allow).pairs(AllowColumns(allow).commands(cols.sources)[cols.source], cols.family,
                                    halves(cols.address), cols.port, cols.names)
    expected = [allow.allows(*e[:4]) for e in entries]
    assert got.tolist() == expected
    assert 0.1 < np.mean(expected) < 0.9  # both answers, many times


# -- the tracker at 100k pairs -------------------------------------------------------------------

PAIRS = 100_000
BEACONS = np.arange(0, PAIRS, 997)  # every 997th pair calls home every 2 s (+-0.2 s), the rest at random
BASE = T0 + 16 * SEC
CALLS = (BASE + 2 * SEC * np.arange(24) + np.random.default_rng(3).uniform(-0.2, 0.2, (len(BEACONS), 24)) * SEC
         ).astype(np.int64)


def big_tick(n: int, rng: np.random.Generator):
    """Tick n (0, 1, 2) of PAIRS pairs, 8 starts each within the 16 s before it: (now, columns,
    the same as connection_starts lists, the starts' times per pair)."""
    now = BASE + 16 * (n + 1) * SEC
    times = np.sort(rng.uniform(now - 16 * SEC, now, (PAIRS, 8)), axis=1).astype(np.int64)
    times[BEACONS] = CALLS[:, 8 * n:8 * n + 8]
    k = np.arange(PAIRS)
    v4 = np.stack([np.full(PAIRS, 198), 18 + (k >> 16), (k >> 8) & 255, k & 255], axis=1).astype(np.uint8)
    address = np.zeros((PAIRS, 16), np.uint8)
    address[:, :4] = v4
    v6 = k % 5 == 0  # a fifth over IPv6: 2001:db8::<the IPv4 address>
    address[v6] = np.frombuffer(ipaddress.IPv6Address("2001:db8::").packed, np.uint8)
    address[v6, 12:] = v4[v6]
    family = np.where(v6, 6, 4).astype(np.uint8)
    sources = [f"command:c{i}" for i in range(500)]
    rows = rng.permutation(PAIRS * 8)  # time-major, shuffled: the tracker must not rely on order
    pair = rows % PAIRS
    cols = StartColumns(sources, (pair % 500).astype(np.int32), family[pair], address[pair],
                        np.full(len(rows), 443, np.uint16), times[pair, rows // PAIRS])
    whole = StartColumns(sources, (k % 500).astype(np.int32), family, address, np.full(PAIRS, 443, np.uint16),
                         np.zeros(PAIRS, np.int64))
    lists = [[sources[i % 500], whole.address_text(i), 443, "", times[i].tolist()] for i in range(PAIRS)]
    return now, cols, lists, times


def reference(ticks):
    """The beacons the tracker's rules find in `ticks` (per tick, (PAIRS, 8) start times, usec),
    on exact intervals: each start at least COALESCE_FRACTION * min_period_sec after the one
    before, scored after each tick, alerting when hot twice in a row. {pair: its regularity row}."""
    last = np.full(PAIRS, -np.inf)
    accepted, hot_before, found = [], np.zeros(PAIRS, bool), {}
    for times in ticks:
        for t in (times // 1000).astype(float).T:  # milliseconds, as the tracker takes them
            ok = t - last >= 1000 * DEFAULTS.min_period_sec * COALESCE_FRACTION
            accepted.append(np.where(ok, t, np.nan))
            last = np.where(ok, t, last)
        r = regularity(np.diff(np.sort(np.stack(accepted, axis=1), axis=1), axis=1) / 1000)
        hot = ((r.count >= DEFAULTS.min_connections - 1) & (r.period >= DEFAULTS.min_period_sec)
               & (r.score >= DEFAULTS.score_threshold))
        for i in np.flatnonzero(hot & hot_before).tolist():
            found.setdefault(i, (r.period[i], r.score[i], int(r.count[i]) + 1))
        hot_before = hot
    return found


def test_100k_pairs_new_then_repeats_same_alerts_from_columns_as_from_lists_in_100_bytes_a_pair():
    rng = np.random.default_rng(11)
    by_columns, by_lists = BeaconTracker(DEFAULTS), BeaconTracker(DEFAULTS)
    alerts_c, alerts_l, ticks = [], [], []
    for n in range(3):  # new pairs, then repeats: 16 starts score, 24 score a second time in a row
        now, cols, lists, times = big_tick(n, rng)
        ticks.append(times)
        alerts_c += by_columns.tick(cols, now, AlertIds(0), True, 600)
        alerts_l += by_lists.tick(lists, now, AlertIds(0), True, 600)
        assert len(by_columns) == PAIRS and by_columns.dropped == 0
    # (the rows come in another order, so the pairs take other slots: the alerts' order differs)
    key = lambda a: a.details["address"]  # noqa: E731
    assert [(a.subject, a.message, a.details) for a in sorted(alerts_c, key=key)] == \
        [(a.subject, a.message, a.details) for a in sorted(alerts_l, key=key)]
    pair_of = {address: i for i, (_, address, *_) in enumerate(lists)}
    expected = reference(ticks)  # the beacons, and random pairs that coalescing made regular enough
    assert sorted(pair_of[a.details["address"]] for a in alerts_c) == sorted(expected)
    assert len(set(BEACONS.tolist()) & set(expected)) >= 0.9 * len(BEACONS)
    for a in alerts_c:  # the same figures, within float16's rounding of each interval
        period, score, count = expected[pair_of[a.details["address"]]]
        assert int(a.details["count"]) == count
        assert abs(float(a.details["period_sec"]) - period) <= 0.0005 * period + 0.001
        assert abs(float(a.details["score"]) - score) < 0.01
    assert by_columns.memory_bytes() / len(by_columns) <= 100


# -- the table's own paths -------------------------------------------------------------------------

def beacon_lists(pairs=60, ticks=40, start=T0):
    """`pairs` beacons (every 2 s) on three ports, as connection_starts lists tick by tick."""
    out = []
    for n in range(ticks):
        now = start + n * 2 * SEC
        out.append((now, [[f"command:b{p % 3}", f"198.51.100.{p}", 1000 + p % 7, "", [now - 5000 - p]]
                          for p in range(pairs)]))
    return out


def replay_lists(tracker, ticks):
    ids = AlertIds(0)
    return [(a.subject, a.details) for now, starts in ticks for a in tracker.tick(starts, now, ids)]


def test_hash_collisions_are_told_apart(monkeypatch):
    """With a hash that is the port alone, every key collides with others: the exact comparison
    of the key columns still finds each pair, and the alerts are the ones a good hash gives."""
    ticks = beacon_lists()
    expected = replay_lists(BeaconTracker(DEFAULTS), ticks)
    assert len(expected) == 60
    monkeypatch.setattr(PairTable, "hash", lambda self, meta, port, addr: port.astype(np.uint64) << np.uint64(40))
    weak = BeaconTracker(DEFAULTS)
    assert replay_lists(weak, ticks) == expected and len(weak) == 60
    assert ("command:b0", "198.51.100.3", 1003) in weak and ("command:b0", "198.51.100.4", 1003) not in weak


def test_sources_no_pair_has_are_forgotten_and_the_clock_rebases():
    tracker = BeaconTracker(dataclasses.replace(DEFAULTS, horizon_sec=60))
    ids = AlertIds(0)
    for n in range(1500):  # a new command name every tick: 1500 sources, each idle after a tick
        tracker.tick([[f"command:x{n}", "198.51.100.1", 443, "", [T0 + n * SEC]]], T0 + n * SEC, ids)
    assert len(tracker.table.sources) <= 1100 and len(tracker) <= 61
    later = beacon_lists(pairs=3, start=T0 + 20 * 86400 * SEC)  # past int32 ms since the first epoch
    assert len(replay_lists(tracker, later)) == 3 and tracker.epoch_ms > T0 // 1000


def test_a_reload_releases_pairs_by_destination_and_name():
    tracker = BeaconTracker(dataclasses.replace(DEFAULTS, allow_destinations=()))
    starts = [["device:02:00:00:00:00:01", "203.0.113.9", 443, "c2.example", [T0]],
              ["device:02:00:00:00:00:01", "203.0.113.10", 443, "", [T0]],
              ["command:curl", "2001:db8::1", 443, "", [T0]]]
    tracker.tick(starts, T0 + 1, AlertIds(0))
    assert len(tracker) == 3
    tracker.reconfigure(dataclasses.replace(DEFAULTS, allow_destinations=("[2001:db8::/32]:443",),
                                            allow_names=("*.example",), trust_dns_names=True))
    assert len(tracker) == 1 and ("device:02:00:00:00:00:01", "203.0.113.10", 443) in tracker
    assert tracker.table.names == {}


def b64(values, dtype) -> str:
    return base64.b64encode(np.asarray(values, dtype).tobytes()).decode()


@pytest.mark.parametrize("damage", [{"port": b64([1, 2, 3], "<u2")}, {"port": b64([1], "u1")},
                                    {"source": b64([0, 0, 9, 0], "<i4")}, {"address": "not base64!"},
                                    {"names": ["x"]}, {"time_usec": [[1]] * 4}])
def test_a_damaged_history_record_is_a_value_error(damage):
    """TickHistory skips a record whose JSON says ValueError (or TypeError), so damage says that."""
    value = {**StartColumns.from_lists(LISTS[:3]).to_json_value(), **damage}
    with pytest.raises((ValueError, TypeError)):
        TickObservation.from_json(json.dumps({"time_usec": 1, "command_starts": value}))


def test_a_beacon_across_a_move_of_the_clock():
    """The tracker keeps int32 ms since an epoch it moves on every 6.2 days at the longest horizon:
    a beacon every 4 h whose starts straddle a move is found, with its period."""
    tracker = BeaconTracker(dataclasses.replace(DEFAULTS, horizon_sec=7 * 86400))
    ids = AlertIds(0)
    tracker.tick([["command:other", "198.51.100.1", 443, "", [T0]]], T0, ids)
    epoch, found = tracker.epoch_ms, []
    for n in range(30):  # from day 5; the 13th start, the first that can alert, is on day 7
        t = T0 + 5 * 86400 * SEC + n * 4 * 3600 * SEC + (n % 3) * 60 * SEC
        found += tracker.tick([["command:beac", "203.0.113.5", 443, "", [t]]], t + SEC, ids)
    (alert,) = found
    assert tracker.epoch_ms > epoch and alert.timestamp_usec > T0 + 2 ** 29 * 1000
    assert abs(float(alert.details["period_sec"]) - 4 * 3600) < 4 * 3600 * 0.0005 + 60
