"""The warning about HTTP listeners the unit's IP filter (IPAddressAllow=localhost) keeps from
other hosts: one per enabled listener outside loopback, only when systemd runs the daemon."""
import logging

from netwatchd.api.listen_scope import warn_beyond_localhost
from netwatchd.config import parse_config

UNDER_SYSTEMD = {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"}
HINT = ("not a loopback address: netwatchd.service allows IP traffic only with localhost "
        "(IPAddressAllow=localhost), so no client reaches this listener unless a drop-in allows it "
        "(systemctl edit netwatchd: [Service] IPAddressAllow=<the clients' addresses or networks>; "
        "README, \"Installing as a service\")")


def config(metrics: str, ebpf: str, metrics_on: bool = True, ebpf_on: bool = True):
    return parse_config(f"metrics:\n  enabled: {str(metrics_on).lower()}\n  listen: \"{metrics}\"\n"
                        f"ebpf_server_api:\n  enabled: {str(ebpf_on).lower()}\n  listen: \"{ebpf}\"\n")


def test_the_shipped_loopback_listeners_say_nothing(caplog):
    with caplog.at_level(logging.WARNING):
        assert warn_beyond_localhost(config("127.0.0.1:9637", "127.0.0.1:8080"), UNDER_SYSTEMD) == []
        assert warn_beyond_localhost(config("[::1]:9637", "127.5.6.7:8080"), UNDER_SYSTEMD) == []
    assert caplog.text == ""


def test_one_warning_per_listener_outside_loopback_naming_its_key_and_the_drop_in(caplog):
    with caplog.at_level(logging.WARNING, logger="netwatchd.api.listen_scope"):
        got = warn_beyond_localhost(config("192.0.2.10:9637", "0.0.0.0:8080"), UNDER_SYSTEMD)
    assert got == [f"metrics.listen is 192.0.2.10:9637, {HINT}", f"ebpf_server_api.listen is 0.0.0.0:8080, {HINT}"]
    assert [r.getMessage() for r in caplog.records] == got


def test_a_disabled_listener_or_a_run_outside_systemd_says_nothing():
    assert warn_beyond_localhost(config("[2001:db8::1]:9637", "0.0.0.0:8080", ebpf_on=False), UNDER_SYSTEMD) == [
        f"metrics.listen is [2001:db8::1]:9637, {HINT}"]
    assert warn_beyond_localhost(config("0.0.0.0:9637", "0.0.0.0:8080", metrics_on=False, ebpf_on=False),
                                 UNDER_SYSTEMD) == []
    assert warn_beyond_localhost(config("0.0.0.0:9637", "0.0.0.0:8080"), {}) == []
