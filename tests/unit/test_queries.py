"""Argument checks behind InvalidArgs, and the answers' fields and messages."""
import pytest

from netwatchd.connects.history import Counts
from netwatchd.connects.latency import bucket_of
from netwatchd.connects.queries import InvalidQuery, check_list, check_summary, summary_answer


@pytest.mark.parametrize(
    "args, message",
    [
        ((5, "curl", 60), "either a pid or a command, not both"),
        ((0, "", 60), "give a pid (non-zero) or a command name"),
        ((0, "curl", 0), "duration_sec must be between 1 and 3600, got 0"),
        ((0, "curl", 3601), "duration_sec must be between 1 and 3600, got 3601"),
        ((0, "a" * 16, 60), "longer than 15 bytes"),
        ((0, "cu\nrl", 60), r"the command contains control characters; ask for it by the name netwatchd shows "
                            r"(and matches): 'cu\x0arl'"),
        ((0, "\x1b[31mRED\x1b[0m", 60), r"ask for it by the name netwatchd shows (and matches): "
                                       r"'\x1b[31mRED\x1b[0m'"),
        ((0, r"a\b", 60), r"command 'a\b' has a backslash that starts no escape"),
        ((0, r"\x1b" * 15 + "x", 60), "longer than 15 bytes"),
    ],
)
def test_bad_summary_arguments(args, message):
    with pytest.raises(InvalidQuery) as raised:
        check_summary(*args, max_window_sec=3600)
    assert message in str(raised.value)


@pytest.mark.parametrize("shown", [
    r"\x1b[31mRED\x1b[0m",  # 12 bytes in the kernel, 18 characters shown
    r"\x1b" * 15,  # 15 bytes: the longest a comm can be
    r"a\\b",  # a process named a\b
    r"caf\xc3",  # 'café' cut by the kernel inside the é
    "café",
])
def test_summary_takes_the_name_as_shown(shown):
    assert check_summary(0, shown, 60, max_window_sec=3600).command == shown


def test_window_limit_follows_config():
    with pytest.raises(InvalidQuery, match="between 1 and 60, got 61"):
        check_summary(0, "curl", 61, max_window_sec=60)
    assert check_summary(0, "curl", 60, max_window_sec=60).duration_sec == 60


def test_list_limits():
    assert check_list(0, 0) == 100
    assert check_list(0, 1000) == 1000
    with pytest.raises(InvalidQuery, match="limit must be at most 1000, got 1001"):
        check_list(0, 1001)


def test_summary_answer_fields_and_message():
    q = check_summary(0, "curl", 60, 3600)
    counts = Counts(succeeded=3, refused=1, timed_out=1, other_failed=0, unknown=0, udp_sends=2)
    latencies = {bucket_of(20_000): 9, bucket_of(40_000): 1}  # nine near 20 ms, one near 40 ms
    a = summary_answer(q, counts, 1, latencies, [])
    assert a["total_attempts"] == 6 and a["succeeded"] == 3 and a["failed"] == 2
    assert (a["refused"], a["timed_out"], a["other_failed"], a["unknown"]) == (1, 1, 0, 0)
    assert a["in_progress"] == 1 and a["udp_sends"] == 2 and a["latency_samples"] == 10
    assert 19_456 <= a["latency_p50_usec"] <= 20_480 and 19_456 <= a["latency_p90_usec"] <= 20_480
    assert 38_912 <= a["latency_p99_usec"] <= 40_960
    assert a["message"] == (
        "command 'curl' made 6 connection attempts in the last 60 s: 3 succeeded, 2 failed "
        f"(1 refused, 1 timed out, 0 other), 1 in progress; handshake latency p50 {a['latency_p50_usec'] / 1000:.1f} ms, "
        f"p90 {a['latency_p90_usec'] / 1000:.1f} ms, p99 {a['latency_p99_usec'] / 1000:.1f} ms; 2 unconnected UDP sends"
    )
    by_pid = summary_answer(check_summary(42, "", 10, 3600), Counts(1, 0, 0, 0, 0, 0), 0, {}, ["curl"])
    assert by_pid["latency_p50_usec"] == 0 and by_pid["latency_samples"] == 0
    assert by_pid["message"].startswith("pid 42 (curl) made 1 connection attempt in the last 10 s")
