"""The configuration file: the documented defaults are the code's defaults, every key is documented,
and every kind of mistake gets one line naming the file, the key path and what is wrong."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from netwatchd.config import ConfigError, ConnectionsConfig, DaemonConfig, as_dict, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "netwatchd.yaml"
SRC = "/etc/netwatchd/test.yaml"
CONNECTIONS_KEYS = ("max_handshakes, max_processes, max_window_sec, poll_interval_ms, recent_records, record_events, "
                    "ring_buffer_kib, trace_udp_sends")


def field_tree(cls) -> dict:
    """{name: None or nested tree} of a config dataclass."""
    tree = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        tree[f.name] = field_tree(type(default)) if dataclasses.is_dataclass(default) else None
    return tree


def key_tree(data: dict) -> dict:
    return {k: key_tree(v) if isinstance(v, dict) else None for k, v in data.items()}


def leaf_fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            yield from leaf_fields(type(default), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, SRC)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    assert message.startswith(f"{SRC}: "), "a config error names the file first"
    return info.value


# -- the shipped file ----------------------------------------------------------------------------

def test_shipped_file_is_exactly_the_code_defaults():
    assert load_config(str(SHIPPED)) == DaemonConfig()
    assert as_dict(load_config(str(SHIPPED))) == as_dict(DaemonConfig())


def test_every_setting_is_written_in_the_shipped_file():
    """A new key must be documented: the file spells out every field, and nothing else."""
    assert key_tree(yaml.safe_load(SHIPPED.read_text())) == field_tree(DaemonConfig)


def test_every_setting_has_a_comment_with_its_bounds():
    lines = SHIPPED.read_text().splitlines()
    for path, f in leaf_fields(DaemonConfig):
        *sections, key = path.split(".")
        start = 0
        for section in sections:  # the key is looked up inside its own section
            start = next(i for i in range(start, len(lines)) if re.match(rf"\s*{section}:", lines[i]))
        pattern = rf"\s+{key}:" if sections else rf"{key}:"
        index = next(i for i in range(start, len(lines)) if re.match(pattern, lines[i]))
        comment = []
        i = index - 1
        while i >= 0 and lines[i].lstrip().startswith("#"):
            comment.insert(0, lines[i])
            i -= 1
        text = " ".join(comment)
        assert comment, f"{path} has no comment above it in {SHIPPED.name}"
        if "range" in f.metadata:
            bounds = f.metadata["range"]
            assert f"{bounds.low}..{bounds.high}" in text, f"{path}: comment does not give {bounds.low}..{bounds.high}"
        if "float_range" in f.metadata:
            low, high = f.metadata["float_range"]
            assert f"{low:g}..{high:g}" in text, f"{path}: comment does not give {low:g}..{high:g}"
        for choice in f.metadata.get("choices", ()):
            assert choice in text, f"{path}: comment does not list {choice!r}"


# -- what parses ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file_means_the_defaults(text):
    assert parse_config(text, SRC) == DaemonConfig()


def test_given_values_override_only_their_keys():
    cfg = parse_config("log_level: debug\nconnections:\n  max_window_sec: 60\n  record_events: false\n", SRC)
    assert cfg == DaemonConfig(log_level="debug",
                               connections=ConnectionsConfig(max_window_sec=60, record_events=False))


def test_an_integer_is_accepted_for_a_float_setting():
    cfg = parse_config("tick_interval_sec: 2\n", SRC)
    assert cfg.tick_interval_sec == 2.0 and isinstance(cfg.tick_interval_sec, float)


@pytest.mark.parametrize("key, low, high", [
    ("max_window_sec", 1, 3600), ("recent_records", 1, 1_000_000), ("max_processes", 64, 1_048_576), ("max_handshakes", 64, 1_048_576),
    ("ring_buffer_kib", 4, 262144), ("poll_interval_ms", 10, 10000),
])
def test_integer_bounds_are_inclusive(key, low, high):
    for value in (low, high):
        assert getattr(parse_config(f"connections: {{{key}: {value}}}", SRC).connections, key) == value


# -- each kind of mistake ------------------------------------------------------------------------

def test_unknown_key_lists_the_known_keys():
    e = error_of("connections:\n  max_proceses: 100\n")
    assert (e.source, e.key_path) == (SRC, "connections.max_proceses")
    assert str(e) == f"{SRC}: connections.max_proceses: unknown key (known keys here: {CONNECTIONS_KEYS})"


def test_unknown_top_level_key():
    e = error_of("tick_interval: 1\n")
    assert str(e) == (f"{SRC}: tick_interval: unknown key "
                      "(known keys here: alerts, beacons, connections, devices, ebpf_server_api, fleet, log_level, metrics, "
                      "state_directory, tick_interval_sec, web)")


@pytest.mark.parametrize("text, key_path, problem", [
    ('connections: {max_processes: "lots"}', "connections.max_processes", "expected an integer, got 'lots'"),
    ("connections: {max_processes: true}", "connections.max_processes", "expected an integer, got True"),
    ("connections: {max_window_sec: 1.5}", "connections.max_window_sec", "expected an integer, got 1.5"),
    ("connections: {max_window_sec: [60]}", "connections.max_window_sec", "expected an integer, got a list"),
    ('connections: {record_events: "yes"}', "connections.record_events", "expected true or false, got 'yes'"),
    ("connections: {trace_udp_sends: 1}", "connections.trace_udp_sends", "expected true or false, got 1"),
    ("tick_interval_sec: fast", "tick_interval_sec", "expected a number, got 'fast'"),
    ("tick_interval_sec: true", "tick_interval_sec", "expected a number, got True"),
    ("log_level: 3", "log_level", "expected a string, got 3"),
    ("log_level:", "log_level", "expected a string, got nothing"),
])
def test_wrong_type_names_key_and_value(text, key_path, problem):
    e = error_of(text)
    assert (e.key_path, e.problem) == (key_path, problem)
    assert str(e) == f"{SRC}: {key_path}: {problem}"


@pytest.mark.parametrize("text, key_path, problem", [
    ("connections: {max_window_sec: 0}", "connections.max_window_sec", "0 is out of range 1..3600"),
    ("connections: {max_window_sec: 3601}", "connections.max_window_sec", "3601 is out of range 1..3600"),
    ("connections: {max_processes: 63}", "connections.max_processes", "63 is out of range 64..1048576"),
    ("connections: {ring_buffer_kib: 524288}", "connections.ring_buffer_kib", "524288 is out of range 4..262144"),
    ("connections: {poll_interval_ms: -1}", "connections.poll_interval_ms", "-1 is out of range 10..10000"),
    ("tick_interval_sec: 0.01", "tick_interval_sec", "0.01 is out of range 0.05..60.0"),
    ("tick_interval_sec: .nan", "tick_interval_sec", "nan is out of range 0.05..60.0"),
    ("log_level: verbose", "log_level", "'verbose' is not one of debug, info, notice, warning, error"),
])
def test_out_of_range_gives_the_bounds(text, key_path, problem):
    e = error_of(text)
    assert str(e) == f"{SRC}: {key_path}: {problem}"


@pytest.mark.parametrize("value", [3000, 6, 100])
def test_ring_buffer_must_be_a_power_of_two(value):
    e = error_of(f"connections: {{ring_buffer_kib: {value}}}")
    assert str(e) == f"{SRC}: connections.ring_buffer_kib: {value} is not a power of two"


def test_malformed_yaml_gives_line_and_column():
    text = "tick_interval_sec: 1.0\nlog_level: info\nconnections:\n  max_window_sec: 60\n  max_processes: 100: 5\n"
    e = error_of(text)
    assert e.key_path == ""
    assert str(e) == f"{SRC}: malformed YAML: line 5, column 21: mapping values are not allowed here"


def test_malformed_yaml_tab_indent():
    e = error_of("connections:\n\tmax_window_sec: 60\n")
    assert str(e).startswith(f"{SRC}: malformed YAML: line 2, column 1: ")


@pytest.mark.parametrize("text, key_path, got", [
    ("- tick_interval_sec: 1\n", "(top level)", "a list"),
    ("just a string\n", "(top level)", "a string"),
    ("42\n", "(top level)", "int"),
    ("connections: 5\n", "connections", "int"),
    ("connections: [max_window_sec]\n", "connections", "a list"),
])
def test_a_mapping_is_required(text, key_path, got):
    e = error_of(text)
    assert str(e) == f"{SRC}: {key_path}: expected a mapping, got {got}"


def test_a_section_with_every_key_commented_out_means_its_defaults():
    cfg = parse_config("connections:\n  # max_window_sec: 60\n", SRC)
    assert cfg.connections == ConnectionsConfig()


def test_unreadable_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"


def test_load_config_names_the_real_path(tmp_path):
    path = tmp_path / "netwatchd.yaml"
    path.write_text("connections:\n  max_window_sec: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == f"{path}: connections.max_window_sec: 0 is out of range 1..3600"


def test_the_two_listeners_cannot_share_an_address():
    e = error_of("metrics: {enabled: true, listen: '127.0.0.1:8080'}\nebpf_server_api: {enabled: true}\n")
    assert str(e) == (f"{SRC}: ebpf_server_api.listen: 127.0.0.1:8080 is also metrics.listen; "
                      "each listener needs its own port")
