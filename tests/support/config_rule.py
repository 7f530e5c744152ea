"""The rule of tests/README.md: a daemon under test runs the shipped config/netwatchd.yaml. A test
may compress time, put its files in its own directory, and change the single settings it is about
(it names each leaf key in `about=`, and tests/unit/test_config_rule.py checks that its name or
docstring says so). An environment override of the harness's is such a key too, checked the same
way, before the check."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import yaml

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "config" / "netwatchd.yaml"
TIME_KEYS = frozenset({"tick_interval_sec", "alerts.learning_period_sec", "alerts.warmup_ticks",
                       "alerts.state_save_interval_sec", "devices.store_interval_sec",
                       "connections.poll_interval_ms", "fleet.resend_interval_sec",
                       *(f"fleet.lifetime_sec.{kind}" for kind in (
                           "new_device", "address_change", "connect_rate", "fan_out", "beacon", "mac_flood",
                           "dhcp_server_new", "dhcp_server_change", "dns_nxdomain_burst", "dns_tunnel", "port_scan",
                           "host_scan", "address_sweep"))})
ENVIRONMENT_KEYS = frozenset({"state_directory"})
# Environment variables that change every daemon the tests start, and the key each is about.
# NETWATCHD_TEST_TC_ATTACH=tc: tests/integration/test_tc_attach.py runs test_devices.py over
# clsact filters (test_the_device_tests_pass_over_clsact, about devices.tc_attach).
ENVIRONMENT_OVERRIDES = {"NETWATCHD_TEST_TC_ATTACH": "devices.tc_attach"}


class ConfigRuleError(AssertionError):
    """A test changed a setting that is neither time, nor its files' place, nor what it is about."""


@functools.lru_cache(maxsize=1)
def _shipped_text() -> str:
    return SHIPPED_CONFIG.read_text()


def shipped() -> Dict:
    """config/netwatchd.yaml as shipped (a fresh copy each call)."""
    return yaml.safe_load(_shipped_text())


def leaf_paths(config: Mapping, prefix: str = "") -> List[str]:
    paths = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        paths += leaf_paths(value, path + ".") if isinstance(value, dict) else [path]
    return paths


def value_at(config: Mapping, path: str):
    for key in path.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def check_config_rule(overrides: Mapping, about=()) -> None:
    """Raises ConfigRuleError for an `about` entry that is not one setting of the shipped file (a
    whole section allows nothing), or for the first override that changes the shipped config
    without being a time setting, the test's own directory, or in `about`."""
    leaves = set(leaf_paths(shipped()))
    for key in about:
        if key not in leaves:
            raise ConfigRuleError(f"about={key!r} is not one setting of config/netwatchd.yaml: name each leaf "
                                  f"key a test is about (tests/README.md)")
    for path in leaf_paths(overrides):
        if path in TIME_KEYS or path in ENVIRONMENT_KEYS or path in about:
            continue
        if value_at(overrides, path) != value_at(shipped(), path):
            raise ConfigRuleError(f"{path} is not a time setting and not in about={tuple(about)!r}: tests run "
                                  f"the shipped config (tests/README.md)")


def merge(base: Dict, extra: Mapping) -> Dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def with_environment(overrides: Mapping, about=(), environ: Mapping = os.environ) -> Tuple[Dict, Tuple[str, ...]]:
    """The overrides and `about` with the harness's environment overrides added (a test's own
    value for the key wins)."""
    overrides, about = merge({}, overrides), tuple(about)
    for variable, path in ENVIRONMENT_OVERRIDES.items():
        if environ.get(variable) and value_at(overrides, path) is None:
            *sections, key = path.split(".")
            overrides = merge(overrides, functools.reduce(lambda inner, s: {s: inner}, reversed(sections),
                                                          {key: environ[variable]}))
            about += (path,)
    return overrides, about


def shipped_config_with(overrides: Mapping, about=(), environ: Mapping = os.environ) -> Dict:
    """config/netwatchd.yaml with the environment's and the test's overrides, checked by the rule."""
    overrides, about = with_environment(overrides, about, environ)
    check_config_rule(overrides, about)
    return merge(shipped(), overrides)
