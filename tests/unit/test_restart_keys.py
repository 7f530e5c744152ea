"""Restart-only keys are declared once, as metadata of the typed config (netwatchd/config.py):
the reload names the changed ones from it (restart_only_changes), and the man page generator
refuses a config/netwatchd.yaml whose "Restart to change." notes say otherwise."""
import importlib.util
import sys
from pathlib import Path

import pytest

from netwatchd.config import DaemonConfig, parse_config, restart_only_changes, restart_only_keys

ROOT = Path(__file__).resolve().parents[2]

# The keys that needed a restart before they were declared in one place, written out: the three
# lists of Daemon.reload, ConnectMonitor.reconfigure and DeviceMonitor.reconfigure, in file order.
RESTART_ONLY = [
    "state_directory",
    "connections.record_events", "connections.max_processes", "connections.max_handshakes",
    "connections.ring_buffer_kib",
    "devices.enabled", "devices.max_devices", "devices.max_patterns", "devices.ring_buffer_kib",
    "devices.snippet_budget_per_sec", "devices.tc_attach",
    "beacons.max_device_pairs",
    "metrics.enabled", "metrics.listen",
    "ebpf_server_api.enabled", "ebpf_server_api.listen",
    "web.enabled", "web.listen", "web.series_ticks",
]


def load_generator():
    spec = importlib.util.spec_from_file_location("man_generate_restart", ROOT / "man" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_restart_only_keys_are_the_ones_that_always_were():
    assert restart_only_keys() == RESTART_ONLY


def test_a_reload_names_exactly_the_restart_only_keys_it_changed():
    old = DaemonConfig()
    new = parse_config("""
tick_interval_sec: 0.5
connections: {max_processes: 1024, max_window_sec: 120, trace_udp_sends: false}
devices: {tc_attach: tc, capture_dns: false, store_interval_sec: 1.0}
alerts: {z_threshold: 8.0, state_save_interval_sec: 1.0}
beacons: {allow_commands: [agent]}
metrics: {listen: "127.0.0.1:9999", top_commands: 5}
""")
    assert restart_only_changes(old, new) == ["connections.max_processes", "devices.tc_attach", "metrics.listen"]
    assert restart_only_changes(new, new) == []
    assert restart_only_changes(old, parse_config("alerts: {learning_period_sec: 60}")) == []


def test_every_restart_only_key_changed_is_named_in_file_order():
    new = parse_config("""
state_directory: /tmp/elsewhere
connections: {record_events: false, max_processes: 1024, max_handshakes: 1024, ring_buffer_kib: 8192}
devices: {enabled: false, max_devices: 8192, max_patterns: 1024, ring_buffer_kib: 2048,
          snippet_budget_per_sec: 64, tc_attach: tcx}
beacons: {max_device_pairs: 1024}
metrics: {enabled: true, listen: "127.0.0.1:9999"}
ebpf_server_api: {enabled: true, listen: "127.0.0.1:8888"}
web: {enabled: true, listen: "127.0.0.1:7777", series_ticks: 60}
""")
    assert restart_only_changes(DaemonConfig(), new) == RESTART_ONLY


def test_the_shipped_files_notes_are_exactly_the_restart_only_keys():
    gen = load_generator()
    _, keys = gen.config_keys((ROOT / "config" / "netwatchd.yaml").read_text())
    assert sorted(k.path for k in keys if "Restart to change." in " ".join(k.comment)) == sorted(RESTART_ONLY)


def test_the_man_page_generator_refuses_a_note_missing_or_wrong():
    gen = load_generator()
    template = gen.YAML_TEMPLATE.read_text()
    shipped = gen.CONFIG.read_text()
    gen.yaml_page(template, shipped)  # as shipped: fine

    unsaid = shipped.replace("# metrics.listen. Restart to change.\n  listen:", "# metrics.listen.\n  listen:")
    assert unsaid != shipped
    with pytest.raises(gen.SourceError, match=r"restart-only ebpf_server_api\.listen does not say"):
        gen.yaml_page(template, unsaid)

    wrong = shipped.replace("# summed under command=\"other\", so the number of series stays bounded.\n",
                            "# summed under command=\"other\", so the number of series stays bounded. "
                            "Restart to change.\n")
    assert wrong != shipped
    with pytest.raises(gen.SourceError, match=r"metrics\.top_commands says 'Restart to change\.', but"):
        gen.yaml_page(template, wrong)

    # and it reads what it checks against from the config's metadata
    with pytest.raises(gen.SourceError, match=r"the comment of metrics\.listen says"):
        gen.yaml_page(template, shipped, [k for k in RESTART_ONLY if k != "metrics.listen"])
