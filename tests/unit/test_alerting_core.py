"""The alerting core (netwatchd/alerting/core.py): the daemon's AlertPipeline and `netwatchctl
replay` run the same AlertingCore, so over the same observations they raise the same alerts
(same ids, times, kinds, subjects, details); the learning window is computed there once."""
import dataclasses

import numpy as np

from netwatchd.alerting.core import AlertingCore
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.pipeline import AlertPipeline
from netwatchd.alerting.replay import replay
from netwatchd.config import AlertsConfig, BeaconsConfig

SEC = 1_000_000
T0 = 1_700_000_000 * SEC
DEVICES = ["02:00:00:00:00:01", "02:00:00:00:00:02"]
NEWCOMER = "00:00:0c:12:34:56"
CFG = AlertsConfig(warmup_ticks=30, learning_period_sec=10, cooldown_sec=600, consecutive_ticks=2)


def history(ticks: int = 300):
    """Background for every device and command; a storm of curl at ticks 200-204, a device
    first seen at tick 3 (learning) and one at tick 250, and `agent` calling home every 10 s."""
    rng = np.random.default_rng(7)
    for n in range(ticks):
        obs = TickObservation(time_usec=T0 + n * SEC,
                              device_connects={mac: int(rng.poisson(3)) for mac in DEVICES},
                              command_connects={"curl": int(rng.poisson(4)), "sshd": int(rng.poisson(1))})
        if 200 <= n < 205:
            obs.command_connects["curl"] = 900
            obs.command_pids["curl"] = [4242]
        if n in (3, 250):
            obs.new_devices.append({"mac": NEWCOMER if n == 250 else "00:00:0c:00:00:03", "vendor": "Cisco",
                                    "interface": "eth0", "ipv4": [], "ipv6": [], "randomized": False})
        if n % 10 == 0:
            obs.connection_starts.append(["command:agent", "203.0.113.5", 443, "", [T0 + n * SEC + 1000]])
        yield obs


class MemoryState:
    """AlertStateFiles' interface, nothing saved before (a first start at `now`)."""

    def __init__(self):
        self.saved = None

    def first_start_usec(self, now_usec, learning_period_sec):
        return now_usec

    def load_baselines(self):
        return None

    def load_alerts(self):
        return []

    def save(self, baselines, alerts):
        self.saved = (baselines, alerts)


class ListHistory:
    def __init__(self):
        self.ticks = []

    def record(self, obs):
        self.ticks.append(obs.to_json())

    def flush(self):
        pass


def test_replay_and_the_daemons_pipeline_raise_the_same_alerts_from_one_core():
    recorded = ListHistory()
    pipeline = AlertPipeline(CFG, MemoryState(), history=recorded, clock=lambda: T0 / SEC)
    live = [a for obs in history() for a in pipeline.tick(obs)]
    replayed = replay((TickObservation.from_json(t) for t in recorded.ticks), CFG)

    assert [(a.timestamp_usec, a.kind, a.subject) for a in live] == [
        # 11 starts (min_connections) score first at tick 100, the 12th start twice in a row
        (T0 + 110 * SEC, "beacon", "command:agent"),
        (T0 + 201 * SEC, "connect_rate", "command:curl"),  # the second anomalous tick in a row
        (T0 + 251 * SEC, "new_device", f"device:{NEWCOMER}"),  # new devices are held a tick
    ]
    assert [a.id for a in live] == ["6553f100-1", "6553f100-2", "6553f100-3"]  # the start second in hex, then a count
    assert [a.to_dict() for a in replayed] == [a.to_dict() for a in live]
    assert [a.to_dict() for a in pipeline.log.all()] == [a.to_dict() for a in live]


def test_the_pipeline_runs_a_core_and_the_learning_window_is_computed_there():
    pipeline = AlertPipeline(CFG, MemoryState(), clock=lambda: T0 / SEC)
    assert isinstance(pipeline.core, AlertingCore)
    assert pipeline.core.learning_until_usec == T0 + 10 * SEC
    assert pipeline.detector.learning_until_usec == T0 + 10 * SEC
    assert pipeline.learning()
    # a reload with a longer learning period: from the same first start
    pipeline.reconfigure(dataclasses.replace(CFG, learning_period_sec=3600), BeaconsConfig())
    assert pipeline.detector.learning_until_usec == T0 + 3600 * SEC
    assert pipeline.core.learning(T0 + 3599 * SEC) and not pipeline.core.learning(T0 + 3600 * SEC)


def test_a_core_counts_its_first_start_from_what_it_is_given():
    core = AlertingCore(CFG, BeaconsConfig(), first_start_usec=T0 - 5 * SEC, now_usec=T0)
    assert core.learning_until_usec == T0 + 5 * SEC
    assert core.ids is core.detector.ids
    assert core.dropped() == {"baseline_keys_pruned": 0, "baseline_keys_evicted": 0,
                              "baseline_keys_refused": 0, "beacon_pairs_dropped": 0,
                              "dhcp_servers_forgotten": 0, "dhcp_servers_unreported": 0,
                              "dns_windows_dropped": 0, "scan_pairs_dropped": 0}
