"""The charts' memory of the last ticks (netwatchd/alerting/tick_series.py): values with the
baseline they were judged against, bounded per tick against a LAN that makes itself keys."""
from netwatchd.alerting.tick_series import TOTALS, TickSeries


def stats_from(table):
    return lambda name, key: table.get((name, key))


def test_a_key_s_series_is_0_on_quiet_ticks_and_carries_its_band_forward():
    s = TickSeries(window=4)
    s.record(1, {"device_connects": {"a": 3}}, stats_from({("device_connects", "a"): (2.0, 0.5)}), {})
    s.record(2, {"device_connects": {}}, stats_from({}), {})
    s.record(3, {"device_connects": {"a": 9, "b": 1}}, stats_from({("device_connects", "a"): (2.5, 1.0)}), {})
    assert s.series("device_connects", "a") == {"time_usec": [1, 2, 3], "value": [3.0, 0.0, 9.0],
                                                "mean": [2.0, 2.0, 2.5], "std": [0.5, 0.5, 1.0]}
    # b had no baseline: its band is 0 (what the detector knew), not made up
    assert s.series("device_connects", "b")["mean"] == [None, None, 0.0]


def test_before_its_first_value_the_band_is_today_s():
    s = TickSeries(window=3)
    s.record(1, {}, stats_from({}), {})
    s.record(2, {"device_fan_out": {"a": 4}}, stats_from({("device_fan_out", "a"): (1.0, 1.0)}), {})
    assert s.series("device_fan_out", "a", now=(1.5, 0.25))["mean"] == [1.5, 1.0]
    assert s.series("device_fan_out", "quiet", now=(0.5, 0.1)) == {
        "time_usec": [1, 2], "value": [0.0, 0.0], "mean": [0.5, 0.5], "std": [0.1, 0.1]}


def test_the_window_keeps_the_newest_ticks_and_totals_follow():
    s = TickSeries(window=2)
    for t in range(5):
        s.record(t, {"command_connects": {"curl": t}}, stats_from({}),
                 {"connects": t, "failed": 1, "new_devices": 0, "alerts": 2})
    assert s.totals() == {"time_usec": [3, 4], "connects": [3.0, 4.0], "failed": [1.0, 1.0], "new_devices": [0.0, 0.0],
                          "alerts": [2.0, 2.0]}
    assert set(s.totals()) == {"time_usec", *TOTALS}
    # the live feed's question after each tick: only the ticks after the one before
    assert s.totals(since_usec=3) == {"time_usec": [4], "connects": [4.0], "failed": [1.0], "new_devices": [0.0],
                                      "alerts": [2.0]}
    assert s.totals(since_usec=4)["time_usec"] == []
    s.resize(3)
    s.record(5, {}, stats_from({}), {})
    assert s.times() == [3, 4, 5]


def test_a_flood_of_keys_keeps_the_largest_and_counts_the_rest_as_unknown_not_zero():
    s = TickSeries(window=2, max_keys=2)
    flood = {f"k{i}": i + 1 for i in range(10)}  # k9 the largest
    s.record(1, {"device_connects": flood}, stats_from({}), {})
    assert s.dropped == 8
    assert s.series("device_connects", "k9")["value"] == [10.0]
    assert s.series("device_connects", "k8")["value"] == [9.0]
    assert s.series("device_connects", "k0")["value"] == [None]  # left out: unknown
    assert s.series("device_fan_out", "k0")["value"] == [0.0]  # another table, not truncated


def test_the_read_model_names_the_same_tables():
    from netwatchd.alerting.tick_series import DETECTOR_TABLES
    from netwatchd.read_model import CHART_TABLES

    assert CHART_TABLES == DETECTOR_TABLES
