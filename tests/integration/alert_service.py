"""A stand-in netwatchd for the alert D-Bus tests: the real ManagerInterface, DBusAlertSink and
AlertPipeline (detector, log) on the bus, with a fake connect engine behind the other properties
(no BPF: what is tested is where alerts go). Runs as root, the only user the policy lets own
the name; DBUS_SYSTEM_BUS_ADDRESS says which bus.

    python alert_service.py STATE_DIR [--alerting on|disabled|none] [--learning]

stdin, one JSON object per line:
    {"tick": <TickObservation as JSON>}   AlertPipeline.tick: the detector raises, sinks emit
    {"signal_only": <alert dict>}         AlertRaised for an alert that is in no log
stdout: "ready", then per command one "alert <json>" per alert raised and "done".
Ends when stdin closes, or on SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from types import SimpleNamespace

from netwatchd.api import dbus as dbus_service
from netwatchd.alerting.pipeline import AlertPipeline
from netwatchd.store.state_files import AlertStateFiles
from netwatchd.alerting.alerts import Alert
from netwatchd.config import AlertsConfig
from netwatchd.alerting.observation import TickObservation


def alerts_config(enabled: bool, learning: bool) -> AlertsConfig:
    # Every alert as soon as the detector sees it: the tests choose what happens in each tick.
    # The tests raise 150 new_device alerts in one tick: a MAC flood on the shipped thresholds, so
    # the flood's bar is raised out of their way (tests/integration/test_hostile_lan.py tests it).
    return AlertsConfig(enabled=enabled, learning_period_sec=3600 if learning else 0, warmup_ticks=1,
                        consecutive_ticks=1, cooldown_sec=0, fan_out_floor=1, device_connect_floor=1,
                        process_connect_floor=1, cold_connect_rate=5, randomized_macs="alert",
                        mac_flood_new_macs=1_000_000)


class FakeDaemon:
    """What ManagerInterface reads from the daemon, minus the kernel."""

    def __init__(self, alerting):
        self.alerting = alerting
        self.started_at_usec = time.time_ns() // 1000
        self.config_path = "/etc/netwatchd/netwatchd.yaml"
        self.devices = None
        self.connects = SimpleNamespace(events_lost=lambda: 0, processes_untracked=lambda: 0, refresh=lambda: None,
                                        handshakes_untracked=lambda: 0, latency_samples_lost=lambda: 0,
                                        history=SimpleNamespace(total=SimpleNamespace(attempts=0)))

    def programs_attached(self):
        return []

    def dropped(self):
        alerting = getattr(self, "alerting", None)
        return alerting.dropped() if alerting is not None else {}

    kernel = SimpleNamespace(release="test", notes=lambda: [])


def say(line: str) -> None:
    print(line, flush=True)


async def serve(args) -> None:
    pipeline = None
    if args.alerting != "none":
        pipeline = AlertPipeline(alerts_config(args.alerting == "on", args.learning), AlertStateFiles(args.state_dir))
    daemon = FakeDaemon(pipeline)
    if args.alerting == "none":
        del daemon.alerting  # a daemon from before alerting existed
    bus = await dbus_service.own_name()
    interface = dbus_service.export(bus, daemon)
    sink = dbus_service.DBusAlertSink(interface)
    if pipeline is not None:
        pipeline.sinks.append(sink)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader(limit=16 << 20)  # a tick of thousands of new devices is one long line
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    say("ready")

    async def commands() -> None:
        while line := await reader.readline():
            command = json.loads(line)
            if "tick" in command:
                raised = pipeline.tick(TickObservation.from_json(json.dumps(command["tick"])))
            else:
                raised = [Alert.from_dict(command["signal_only"])]
                sink.emit(raised[0])
            for alert in raised:
                say("alert " + json.dumps(alert.to_dict()))
            say("done")

    done, pending = await asyncio.wait([asyncio.ensure_future(stop.wait()), asyncio.ensure_future(commands())],
                                       return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    bus.disconnect()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("state_dir")
    p.add_argument("--alerting", choices=("on", "disabled", "none"), default="on")
    p.add_argument("--learning", action="store_true")
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
