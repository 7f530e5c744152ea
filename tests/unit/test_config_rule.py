"""The rule of tests/README.md: a daemon under test runs the shipped config/netwatchd.yaml,
changing only time settings, its own directory, and the single settings it is about, which the
enclosing test or fixture (or its module) names in its name or docstring. The harness enforces it
for every daemon (tests/support/config_rule.py); this scan checks each `about=` is declared where
it can be read: a literal (or a module constant) at the call, never an expression or an assignment."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.config_rule import (ConfigRuleError, check_config_rule, leaf_paths, shipped,
                                       shipped_config_with, with_environment)

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
    check_config_rule({"metrics": {"enabled": True, "listen": "127.0.0.1:1"}}, about=("metrics.enabled", "metrics.listen"))


def test_about_names_single_settings_never_a_section_or_a_key_that_does_not_exist():
    with pytest.raises(ConfigRuleError, match=r"about='metrics' is not one setting"):
        check_config_rule({"metrics": {"enabled": True}}, about=("metrics",))
    with pytest.raises(ConfigRuleError, match=r"about='metrics.no_such_key'"):
        check_config_rule({}, about=("metrics.no_such_key",))


def test_a_value_equal_to_the_shipped_one_is_no_change():
    check_config_rule({"alerts": {"consecutive_ticks": 2}, "devices": {"interfaces": "auto"}})


def test_the_merged_config_is_the_shipped_one_plus_the_overrides():
    merged = shipped_config_with({"tick_interval_sec": 0.5}, environ={})
    assert merged["tick_interval_sec"] == 0.5
    assert merged["alerts"]["consecutive_ticks"] == 2 and merged["devices"]["interfaces"] == "auto"


def test_an_environment_override_is_a_declared_key_checked_before_the_test_s_own():
    """NETWATCHD_TEST_TC_ATTACH=tc: devices.tc_attach, declared by the variable (a test's own
    value wins); a value it sets that is no setting of the file fails the check."""
    overrides, about = with_environment({"tick_interval_sec": 1}, (), {"NETWATCHD_TEST_TC_ATTACH": "tc"})
    assert overrides == {"tick_interval_sec": 1, "devices": {"tc_attach": "tc"}} and about == ("devices.tc_attach",)
    assert shipped_config_with({}, environ={"NETWATCHD_TEST_TC_ATTACH": "tc"})["devices"]["tc_attach"] == "tc"
    own = shipped_config_with({"devices": {"tc_attach": "tcx"}}, about=("devices.tc_attach",),
                              environ={"NETWATCHD_TEST_TC_ATTACH": "tc"})
    assert own["devices"]["tc_attach"] == "tcx"
    with pytest.raises(ConfigRuleError, match=r"devices.tc_attach is not a time setting"):
        shipped_config_with({"devices": {"tc_attach": "tc"}}, environ={})


def literal_keys(node):
    """The keys of a tuple/list literal of strings; None for anything else."""
    if isinstance(node, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                                                       for e in node.elts):
        return [e.value for e in node.elts]
    return None


def about_uses():
    """(where, enclosing function, its text, about keys or None when not a literal) of every
    `about=` keyword in tests/, and "assigned" for every assignment to a name or attribute called
    `about` inside a function outside the harness (tests/support/ keeps what a test declared)."""
    for path in sorted(TESTS.rglob("*.py")):
        if path.resolve() == Path(__file__).resolve():
            continue  # the rule's own cases, above
        tree = ast.parse(path.read_text(), str(path))
        constants = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                     for t in node.targets if isinstance(t, ast.Name)}
        module_text = (ast.get_docstring(tree) or "") + path.stem
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            params = {a.arg for f in ast.walk(func) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                      for a in f.args.args + f.args.kwonlyargs}  # its own, and those of functions within
            text = module_text + func.name + (ast.get_docstring(func) or "")
            where = f"{path.relative_to(TESTS)}:{func.name}"
            for node in ast.walk(func):
                if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and path.parent.name != "support":
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for t in targets:
                        if (getattr(t, "id", None) or getattr(t, "attr", None)) == "about":
                            yield where, func.name, text, "assigned"
                if not isinstance(node, ast.Call):
                    continue
                for kw in node.keywords:
                    if kw.arg != "about":
                        continue
                    if isinstance(kw.value, ast.Name) and kw.value.id in params and kw.value.id not in constants:
                        continue  # a parameter passed through: its callers' about= are checked
                    value = constants.get(kw.value.id) if isinstance(kw.value, ast.Name) else kw.value
                    yield where, func.name, text, literal_keys(value)


def test_every_about_is_a_literal_and_every_key_is_named_where_it_is_used():
    uses = list(about_uses())
    assert len(uses) > 20, "the scan found (almost) no about=: it is looking in the wrong place"
    assert [w for w, _, _, keys in uses if keys == "assigned"] == [], "about assigned, not passed at the call"
    assert [w for w, _, _, keys in uses if keys is None] == [], "about= is not a literal (or a module constant)"
    leaves = set(leaf_paths(shipped()))
    unnamed = [f"{where}: {key}" for where, func, text, keys in uses if isinstance(keys, list) for key in keys
               if key not in leaves or (key not in text and key.replace(".", "_") not in text)]
    assert unnamed == []


def test_the_scan_rejects_an_expression_an_assignment_and_an_unnamed_key(tmp_path, monkeypatch):
    (tmp_path / "test_bad.py").write_text('''"""A module."""
def test_expression(w):
    w.start_daemon({}, about=("devices.interfaces",) + w.more)
def test_assignment(w):
    w.d.about = ("alerts.cooldown_sec",)
def test_unnamed(w):
    w.start_daemon({}, about=("alerts.cooldown_sec",))
''')
    monkeypatch.setattr(__import__(__name__, fromlist=["TESTS"]), "TESTS", tmp_path)
    uses = {func: keys for _, func, _, keys in about_uses()}
    assert uses == {"test_expression": None, "test_assignment": "assigned", "test_unnamed": ["alerts.cooldown_sec"]}
