"""A stand-in netwatchd for the alert D-Bus tests: the real ManagerInterface, DBusAlertSink,
read model (netwatchd.daemon_view.DaemonView) and AlertPipeline (detector, log) on the bus, with
no connect or device engine behind the read model (no BPF: what is tested is where alerts go;
their figures read as off, 0). Runs as root, the only user the policy lets own the name;
DBUS_SYSTEM_BUS_ADDRESS says which bus.

    python alert_service.py STATE_DIR CONFIG [--no-alerting]

CONFIG: the daemon's config file, written by the harness (alert_bus_support.AlertService): the
shipped config with time compressed (learning over at once, warm after one tick), checked by the
rule of tests/README.md like every daemon's; --no-alerting: a daemon without an alert pipeline.

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
from netwatchd.config import DaemonConfig, parse_config
from netwatchd.alerting.observation import TickObservation

CONFIG_PATH = "/etc/netwatchd/netwatchd.yaml"
# a kernel with everything: KernelRelease "test", no KernelFallbacks
KERNEL = KernelFeatures(release="test", task_pt_regs=True, tcx=True, ringbuf=True, sk_err_offset=0)


def read_model(alerting, cfg: DaemonConfig) -> DaemonView:
    """The daemon's read model over `alerting` alone (None: a daemon without alerting)."""
    return DaemonView(None, None, alerting, config=lambda: cfg, config_path=CONFIG_PATH,
                      started_at_usec=time.time_ns() // 1000, kernel=lambda: KERNEL)


def say(line: str) -> None:
    print(line, flush=True)


async def serve(args) -> None:
    with open(args.config) as f:
        cfg = parse_config(f.read(), args.config)
    pipeline = None if args.no_alerting else AlertPipeline(cfg.alerts, AlertStateFiles(args.state_dir))
    bus = await dbus_service.own_name()
    interface = dbus_service.export(bus, read_model(pipeline, cfg))  # the pipeline's alerts go out as AlertRaised
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
    p.add_argument("config")
    p.add_argument("--no-alerting", action="store_true")
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
