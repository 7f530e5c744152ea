"""A stand-in netwatchd for the alert D-Bus tests: the real ManagerInterface, DBusAlertSink,
read model (netwatchd.daemon_view.DaemonView) and AlertPipeline (detector, log) on the bus, with
no connect or device engine behind the read model (no BPF: what is tested is where alerts go;
their figures read as off, 0). Runs as root, the only user the policy lets own the name;
DBUS_SYSTEM_BUS_ADDRESS says which bus.

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

from netwatchd.api import dbus as dbus_service
from netwatchd.alerting.pipeline import AlertPipeline
from netwatchd.daemon_view import DaemonView
from netwatchd.kernel.features import KernelFeatures
from netwatchd.store.state_files import AlertStateFiles
from netwatchd.alerting.alerts import Alert
from netwatchd.config import AlertsConfig, DaemonConfig
from netwatchd.alerting.observation import TickObservation

CONFIG_PATH = "/etc/netwatchd/netwatchd.yaml"
# a kernel with everything: KernelRelease "test", no KernelFallbacks
KERNEL = KernelFeatures(release="test", task_pt_regs=True, tcx=True, ringbuf=True, sk_err_offset=0)


def alerts_config(enabled: bool, learning: bool) -> AlertsConfig:
    # Every alert as soon as the detector sees it: the tests choose what happens in each tick.
    # The tests raise 150 new_device alerts in one tick: a MAC flood on the shipped thresholds, so
    # the flood's bar is raised out of their way (tests/integration/test_hostile_lan.py tests it).
    return AlertsConfig(enabled=enabled, learning_period_sec=3600 if learning else 0, warmup_ticks=1,
                        consecutive_ticks=1, cooldown_sec=0, fan_out_floor=1, device_connect_floor=1,
                        process_connect_floor=1, cold_connect_rate=5, randomized_macs="alert",
                        mac_flood_new_macs=1_000_000)


def read_model(alerting) -> DaemonView:
    """The daemon's read model over `alerting` alone (None: a daemon without alerting)."""
    cfg = DaemonConfig()
    return DaemonView(None, None, alerting, config=lambda: cfg, config_path=CONFIG_PATH,
                      started_at_usec=time.time_ns() // 1000, kernel=lambda: KERNEL)


def say(line: str) -> None:
    print(line, flush=True)


async def serve(args) -> None:
    pipeline = None
    if args.alerting != "none":
        pipeline = AlertPipeline(alerts_config(args.alerting == "on", args.learning), AlertStateFiles(args.state_dir))
    bus = await dbus_service.own_name()
    interface = dbus_service.export(bus, read_model(pipeline))  # the pipeline's alerts go out as AlertRaised
    sink = dbus_service.DBusAlertSink(interface)  # for signal_only

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
