"""The rule of tests/README.md: a daemon under test runs the shipped config/netwatchd.yaml,
changing only time settings, its own directory, and the keys it is about, which the enclosing
test or fixture (or its module) names in its name or docstring."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.harness import ConfigRuleError, check_config_rule, shipped_config_with

TESTS = Path(__file__).resolve().parents[1]


def test_time_settings_and_the_state_directory_may_change():
    check_config_rule({"tick_interval_sec": 0.2, "state_directory": "/tmp/x",
                       "alerts": {"learning_period_sec": 5, "warmup_ticks": 3},
                       "devices": {"store_interval_sec": 0.5}, "connections": {"poll_interval_ms": 20}})


def test_a_threshold_may_not_change_unless_the_test_is_about_it():
    with pytest.raises(ConfigRuleError, match=r"alerts.consecutive_ticks is not a time setting"):
        check_config_rule({"alerts": {"consecutive_ticks": 1}})
    with pytest.raises(ConfigRuleError, match=r"alerts.cold_connect_rate"):
        check_config_rule({"alerts": {"cold_connect_rate": 100000}}, about=("alerts.consecutive_ticks",))
    check_config_rule({"alerts": {"consecutive_ticks": 1}}, about=("alerts.consecutive_ticks",))
    check_config_rule({"metrics": {"enabled": True, "listen": "127.0.0.1:1"}}, about=("metrics",))


def test_a_value_equal_to_the_shipped_one_is_no_change():
    check_config_rule({"alerts": {"consecutive_ticks": 2}, "devices": {"interfaces": "auto"}})


def test_the_merged_config_is_the_shipped_one_plus_the_overrides():
    merged = shipped_config_with({"tick_interval_sec": 0.5})
    assert merged["tick_interval_sec"] == 0.5
    assert merged["alerts"]["consecutive_ticks"] == 2 and merged["devices"]["interfaces"] == "auto"


DAEMON_MAKERS = {"DaemonProcess", "write_config", "LanDaemon"}


def called(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")


def about_uses():
    """(file, enclosing function, its text, about keys) of every about=... in tests/."""
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        constants = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                     for t in node.targets if isinstance(t, ast.Name)}
        module_text = (ast.get_docstring(tree) or "") + path.stem
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for call in [n for n in ast.walk(func) if isinstance(n, ast.Call) and called(n) in DAEMON_MAKERS]:
                for kw in call.keywords:
                    if kw.arg != "about":
                        continue
                    value = constants.get(kw.value.id, kw.value) if isinstance(kw.value, ast.Name) else kw.value
                    if not isinstance(value, (ast.Tuple, ast.List)):
                        continue  # passed through from a caller: checked there
                    keys = [e.value for e in value.elts if isinstance(e, ast.Constant)]
                    text = module_text + func.name + (ast.get_docstring(func) or "")
                    yield path.relative_to(TESTS), func.name, text, keys


def test_every_about_key_is_named_where_it_is_used():
    uses = list(about_uses())
    assert uses, "the scan found no about= at all: it is looking in the wrong place"
    unnamed = [f"{path}:{func}: {key}" for path, func, text, keys in uses for key in keys
               if key not in text and key.replace(".", "_") not in text]
    assert unnamed == []
