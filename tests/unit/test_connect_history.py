"""Per-process counts over time: deltas from cumulative kernel counters, windows, pruning."""
from netwatchd.connects.history import ConnectHistory, CounterDeltas, Counts

CURL = (100, "curl")
CURL2 = (200, "curl")
SSH = (100, "ssh")  # same pid after exec
K1, K2 = (100, 0), (100, 1)  # kernel counter keys: (pid, generation)


def test_deltas_from_cumulative_counters():
    d = CounterDeltas()
    assert d.update({K1: Counts(2, 1, 0, 0, 0, 0)}) == {K1: Counts(2, 1, 0, 0, 0, 0)}
    assert d.update({K1: Counts(2, 1, 0, 0, 0, 0)}) == {}
    assert d.update({K1: Counts(5, 1, 0, 0, 1, 3)}) == {K1: Counts(3, 0, 0, 0, 1, 3)}


def test_a_read_that_raced_with_a_retire_is_ignored_not_double_counted():
    d = CounterDeltas()
    d.update({K1: Counts(10, 0, 0, 0, 0, 0)})
    # the read caught the live entry zeroed before its new generation showed: no negative delta
    assert d.update({K1: Counts(0, 0, 0, 0, 0, 0)}) == {}
    # the next consistent read (the retired copy) brings nothing new either
    assert d.update({K1: Counts(10, 0, 0, 0, 0, 0)}) == {}
    assert d.update({K1: Counts(12, 0, 0, 0, 0, 0)}) == {K1: Counts(2, 0, 0, 0, 0, 0)}


def test_forgotten_counters_start_from_zero():
    d = CounterDeltas()
    d.update({K1: Counts(10, 0, 0, 0, 0, 0)})
    d.forget([K1])  # deleted by us after the process was gone; its pid is reused later
    assert d.update({K1: Counts(3, 0, 0, 0, 0, 0)}) == {K1: Counts(3, 0, 0, 0, 0, 0)}


def test_unchanged_keys():
    d = CounterDeltas()
    d.update({K1: Counts(1, 0, 0, 0, 0, 0), K2: Counts(1, 0, 0, 0, 0, 0)})
    assert d.unchanged_keys({K1: Counts(1, 0, 0, 0, 0, 0), K2: Counts(2, 0, 0, 0, 0, 0)}) == {K1}


def test_window_by_command_and_pid():
    h = ConnectHistory(3600)
    h.record(1000, {CURL: Counts(3, 1, 0, 0, 0, 0), CURL2: Counts(1, 0, 0, 0, 0, 0)})
    h.record(1030, {CURL: Counts(1, 0, 0, 0, 1, 2), SSH: Counts(4, 0, 0, 0, 0, 0)})
    assert h.summary(1030, 60, command="curl") == Counts(5, 1, 0, 0, 1, 2)
    assert h.summary(1030, 60, command="curl").attempts == 7  # UDP sends are their own kind
    assert h.summary(1030, 60, pid=100) == Counts(8, 1, 0, 0, 1, 2)  # curl then ssh: same pid
    assert h.summary(1030, 10, command="curl") == Counts(1, 0, 0, 0, 1, 2)  # only second 1030
    assert h.summary(1030, 30, command="curl") == Counts(1, 0, 0, 0, 1, 2)  # 1000 is 30 s old: outside
    assert h.summary(1030, 31, command="curl") == Counts(5, 1, 0, 0, 1, 2)
    assert h.summary(1030, 60, command="wget") == Counts()
    assert h.commands_of(100) == ["curl", "ssh"]
    assert h.total.attempts == 11


def test_same_second_merges():
    h = ConnectHistory(60)
    h.record(5, {CURL: Counts(1, 0, 0, 0, 0, 0)})
    h.record(5, {CURL: Counts(2, 0, 0, 0, 0, 0)})
    assert h.summary(5, 1, command="curl") == Counts(3, 0, 0, 0, 0, 0)


def test_prune_keeps_memory_flat_and_windows_exact():
    h = ConnectHistory(100)
    for second in range(0, 1000):
        h.record(second, {CURL: Counts(1, 0, 0, 0, 0, 0)})
        h.prune(second)
    series = h._series[CURL]
    assert len(series.seconds) == 101  # the window (100 s) and the second it starts in: nothing older
    assert h.summary(999, 100, command="curl") == Counts(100, 0, 0, 0, 0, 0)
    assert h.summary(999, 1, command="curl") == Counts(1, 0, 0, 0, 0, 0)
    h.prune(2000)
    assert len(h) == 0
    assert h.summary(2000, 100, command="curl") == Counts()
