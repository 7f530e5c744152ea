"""The read model (netwatchd/read_model.py): the daemon's implementation (netwatchd/daemon_view.py)
has exactly its members, with the same arguments; with a part absent it answers as off; a limit
out of range is refused whatever runs (as ListAlerts and ListDevicesPage always did)."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from netwatchd import __version__
from netwatchd.alerting.pipeline import AlertPipeline
from netwatchd.config import AlertsConfig, DaemonConfig
from netwatchd.daemon_view import DaemonView
from netwatchd.errors import InvalidQuery, NoSuchDevice
from netwatchd.kernel.features import KernelFeatures
from netwatchd.read_model import KINDS, CommandTotals, EventsLost, ReadModel
from netwatchd.store.state_files import AlertStateFiles

KERNEL = KernelFeatures(release="6.1.0-test", task_pt_regs=True, tcx=False, ringbuf=True, sk_err_offset=0)


def protocols():
    return [c for c in ReadModel.__mro__ if c.__module__ == "netwatchd.read_model"]


def read_model_members():
    return {name for c in protocols() for name in vars(c) if not name.startswith("_")}


def public_members(obj):
    return {name for name in dir(obj) if not name.startswith("_")}


def arguments(function):
    return list(inspect.signature(function).parameters)


def view(alerting=None, cfg=DaemonConfig()) -> DaemonView:
    return DaemonView(None, None, alerting, config=lambda: cfg, config_path="/etc/netwatchd/netwatchd.yaml",
                      started_at_usec=1_700_000_000_000_000, kernel=lambda: KERNEL)


def test_the_daemon_view_is_the_read_model_and_nothing_more():
    assert isinstance(view(), ReadModel)
    assert public_members(view()) == read_model_members()
    for c in protocols():
        for name, member in vars(c).items():
            if callable(member) and not name.startswith("_"):
                assert arguments(getattr(DaemonView, name)) == arguments(member), name


def test_without_engines_every_figure_reads_as_off():
    v = view()
    v.refresh()
    assert (v.version(), v.started_at_usec(), v.config_path()) == (
        __version__, 1_700_000_000_000_000, "/etc/netwatchd/netwatchd.yaml")
    assert (v.kernel_release(), v.kernel_fallbacks()) == ("6.1.0-test", [
        "TC classifier on clsact filters (no TCX links before Linux 6.6)"])
    assert v.max_window_sec == DaemonConfig().connections.max_window_sec
    assert (v.programs_attached(), v.interfaces(), v.connect_attempts(), v.device_count()) == ([], [], 0, 0)
    assert v.events_lost() == EventsLost(connect=0, device=0)
    assert (v.malformed_frames(), v.processes_untracked(), v.handshakes_untracked(), v.latency_samples_lost()) == (
        0, 0, 0, 0)
    assert (v.dropped(), v.protocol_totals(), v.device_summaries(), v.device_page(0, 0)) == ({}, {}, [], ([], 0))
    with pytest.raises(NoSuchDevice, match=r"device watching is disabled in the configuration \(devices.enabled\)"):
        v.device("00:16:3e:00:00:01")
    assert (v.alerts_enabled(), v.learning(), v.alert_counts(), v.newest_alerts(0)) == (False, False, {}, [])
    assert (v.command_totals(), v.command_overflow(), v.latency_by_command(), v.program_fds()) == (
        {}, CommandTotals(0, 0), {}, {})
    assert (v.beacon_pairs(), v.beacon_pairs_dropped()) == (0, 0)
    v.add_alert_sink(object())  # nothing to register with: no error
    v.add_pattern_listener(print)


@pytest.mark.parametrize("ask", [lambda v: v.newest_alerts(1001), lambda v: v.device_page(0, 1001)])
def test_a_limit_over_1000_is_refused_even_when_nothing_runs(ask):
    with pytest.raises(InvalidQuery, match="^limit must be at most 1000, got 1001$"):
        ask(view())


def test_alert_counts_outlive_alerts_enabled_false(tmp_path):
    on = AlertPipeline(AlertsConfig(), AlertStateFiles(str(tmp_path / "on")))
    assert view(on).alerts_enabled() is True
    assert view(on).alert_counts() == {kind: 0 for kind in KINDS}
    off = AlertPipeline(dataclasses.replace(AlertsConfig(), enabled=False), AlertStateFiles(str(tmp_path / "off")))
    v = view(off)
    assert (v.alerts_enabled(), v.learning(), v.newest_alerts(5)) == (False, False, [])
    assert v.alert_counts() == {kind: 0 for kind in KINDS}  # the log's counts, as /metrics shows them
