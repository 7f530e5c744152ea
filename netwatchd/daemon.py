"""netwatchd: the daemon's process model. Loads the probes, serves D-Bus, ticks, reloads, stops.

    netwatchd --config FILE          run (systemd Type=notify; also fine in a terminal)
    netwatchd --check-config FILE    validate a file and exit (0 valid, 78 invalid)
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections import deque
from typing import Deque

from netwatchd import __version__, logsetup
from netwatchd.config import (DEFAULT_CONFIG_PATH, ConfigError, DaemonConfig, load_config, restart_only_changes,
                              state_directory)
from netwatchd.alerting.pipeline import AlertPipeline
from netwatchd.connects.monitor import ConnectMonitor
from netwatchd.daemon_view import DaemonView
from netwatchd.device_setup import start_devices, stop_devices
from netwatchd.store.state_files import AlertStateFiles, open_history
from netwatchd.api.journal import JournalSink
from netwatchd.notify import Notifier, watchdog_interval_sec
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.tick_series import TickSeries
from netwatchd.kernel.bpf_util import return_freed_heap

log = logging.getLogger("netwatchd")

BIG_TICK_STARTS = 10_000  # connection starts in one tick above which freed heap is returned
IDENTITY_REFRESH_SEC = 10.0  # the segment follows DHCP and gateway changes this closely
IDENTITY_RETRY_SEC = 0.2  # ...and is looked for this often while a gateway's MAC is unknown
RECENT_TICKS = 60  # the ticks whose mean and max the read model's tick_time() gives

EXIT_CONFIG = 78  # EX_CONFIG; the unit's RestartPreventExitStatus stops a restart loop on it
EXIT_FAILURE = 1


class Daemon:
    def __init__(self, config_path: str, cfg: DaemonConfig, probe=None):
        self.config_path = config_path
        self.cfg = cfg
        self.started_cfg = cfg  # what restart-only settings are actually running with
        self.started_at_usec = time.time_ns() // 1000
        self.notifier = Notifier()
        self._probe = probe
        self.connects: ConnectMonitor | None = None
        self.devices = None  # DeviceMonitor when devices.enabled
        self.alerting: AlertPipeline | None = None
        self.view: DaemonView | None = None  # the read model every edge is handed (netwatchd/read_model.py)
        self._last_alert_save = 0.0
        self._big_tick_before = False  # the last tick had many connection starts (see _observe)
        self._stop = asyncio.Event()
        self._bus = None
        self._http = None  # api/http.py HttpApi when metrics.enabled
        self._ebpf_http = None  # ebpf-server's API when ebpf_server_api.enabled
        self._web = None  # api/web/listener.py WebListener when web.enabled
        self._tick_listeners = []  # the read model's add_tick_listener (the web UI's live pages)
        self._ticks = 0
        self._tick_sec = 0.0
        self._recent_ticks: Deque[float] = deque(maxlen=RECENT_TICKS)
        self.fleet = None  # api/fleet_sender.py FleetSender: alerts to Alertmanager (fleet.*)
        self._identity_reader = None
        self._identity = None  # read_model.HostIdentity, refreshed every IDENTITY_REFRESH_SEC
        self._identity_read_at = 0.0

    @property
    def kernel(self):
        """What the running kernel can do (netwatchd/kernel/features.py), probed once."""
        from netwatchd.kernel import features

        return features.current()

    def status_line(self) -> str:
        c = self.connects
        line = "watching connect(): %d attempts, %d processes tracked, %d records lost" % (
            c.history.total.attempts,
            len(c.history),
            c.events_lost(),
        )
        if self.devices is not None:
            line += "; %d devices on %s" % (len(self.devices.devices), ", ".join(self.devices.interfaces()) or "no interface")
        return line

    async def run(self) -> int:
        from netwatchd.api import dbus as dbus_service
        from netwatchd.api.bus_reconnect import stay_on_bus
        from netwatchd.api.listen_scope import warn_beyond_localhost
        from netwatchd.kernel.connect_probe import ConnectProbe

        self._bus = await dbus_service.own_name()
        self.kernel  # probed and logged once, before any program is compiled
        if self._probe is None:
            self._probe = ConnectProbe(self.cfg.connections)
        try:
            self._probe.start()
            self.connects = ConnectMonitor(self._probe, self.cfg.connections)
            if self.cfg.devices.enabled:
                self.devices = start_devices(self.cfg)
            journal = JournalSink()
            self.alerting = AlertPipeline(self.cfg.alerts, AlertStateFiles(state_directory(self.cfg)), sinks=[journal],
                                          history=open_history(state_directory(self.cfg), self.cfg.alerts.history_ticks,
                                                               self.cfg.alerts.history_max_bytes),
                                          beacons=self.cfg.beacons,
                                          series=TickSeries(self.cfg.web.series_ticks) if self.cfg.web.enabled else None)
            self.view = DaemonView(self.connects, self.devices, self.alerting, config=lambda: self.cfg,
                                   config_path=self.config_path, started_at_usec=self.started_at_usec,
                                   kernel=lambda: self.kernel, identity=self.host_identity,
                                   fleet=lambda: self.fleet.status(), tick_listeners=self._tick_listeners,
                                   tick_time=self.tick_time)
            self._start_fleet(journal)
            interface = dbus_service.export(self._bus, self.view)  # AlertRaised, PatternSeen registered
            warn_beyond_localhost(self.cfg)  # the unit's IPAddressAllow= lets only localhost through
            if self.cfg.metrics.enabled:
                from netwatchd.api.http import HttpApi

                self._http = HttpApi(self.view, self.cfg.metrics)
                await self._http.start()
            if self.cfg.ebpf_server_api.enabled:
                from netwatchd.api.http import ebpf_server_listener

                self._ebpf_http = ebpf_server_listener(self.view)
                await self._ebpf_http.start()
            if self.cfg.web.enabled:
                from netwatchd.api.web.listener import WebListener

                self._web = WebListener(self.view)
                await self._web.start()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, self._stop.set)
            loop.add_signal_handler(signal.SIGINT, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            tasks = [asyncio.create_task(self._every(self._poll_interval, self._poll)),
                     asyncio.create_task(self._every(lambda: self.cfg.tick_interval_sec, self._tick)),
                     asyncio.create_task(stay_on_bus(self._bus, dbus_service.own_name,
                                                     lambda bus: dbus_service.serve(bus, interface),
                                                     self._set_bus))]
            wd = watchdog_interval_sec()
            if wd:
                tasks.append(asyncio.create_task(self._every(lambda: wd, self.notifier.watchdog)))
            # The detector's first tick starts now: what commands did while the device program was
            # still compiling (seconds, on a busy machine) is not one tick's worth of connects, and
            # the baselines would learn it as one (or alert on it, with consecutive_ticks 1).
            self.connects.tick()
            self.connects.take_observation(TickObservation(time_usec=0))
            # READY only now: programs attached, name owned.
            self.notifier.ready(self.status_line())
            log.info("netwatchd %s ready: %s", __version__, ", ".join(self.view.programs_attached()))
            await self._stop.wait()
            self.notifier.stopping()
            log.info("stopping")
            for t in tasks:
                t.cancel()
        finally:
            if self._http is not None:
                await self._http.stop()
            if self._ebpf_http is not None:
                await self._ebpf_http.stop()
            if self._web is not None:
                await self._web.stop()
            if self._bus.connected:
                self._bus.disconnect()
            if self.devices is not None:
                stop_devices(self.devices)
            if self.alerting is not None:
                self.alerting.close()
            if self.fleet is not None:
                self.fleet.close()
            self._probe.stop()
        return 0

    def _start_fleet(self, journal: JournalSink) -> None:
        """Journal entries carry the fleet's ids; alerts go to Alertmanager while fleet.* says so."""
        from netwatchd.api import fleet_labels
        from netwatchd.api.fleet_sender import FleetSender
        from netwatchd.store.alert_spool import open_spool

        fleet = self.fleet = FleetSender(self.view, lambda: open_spool(state_directory(self.started_cfg)))
        journal.identity_fields = lambda alert: fleet_labels.journal_fields(alert, *fleet.placed(alert))
        self.alerting.sinks.append(fleet)

    def host_identity(self):
        """Who this host is to a fleet (api/fleet_identity.py), read again every few seconds."""
        from netwatchd.api.fleet_identity import IdentityReader

        if self._identity_reader is None:
            self._identity_reader = IdentityReader(neighbour=self._neighbour)
        now = time.monotonic()
        complete = self._identity is not None and all("@" in seg for _, seg in self._identity.segments)
        # while a gateway's MAC is unknown, looked for again at once: the first alerts must already
        # carry the segment the other hosts compute
        if self._identity is None or now - self._identity_read_at >= (IDENTITY_REFRESH_SEC if complete
                                                                      else IDENTITY_RETRY_SEC):
            interfaces = self.devices.interfaces() if self.devices is not None else []
            self._identity = self._identity_reader.read(interfaces, self.cfg.fleet.host_id, self.cfg.fleet.segment)
            self._identity_read_at = now
        return self._identity

    def _neighbour(self, ip: str) -> str:
        """The MAC the device inventory knows for `ip` ('' when none): a gateway's, before the
        kernel's neighbour table has it."""
        if self.devices is None:
            return ""
        try:
            return self.devices.get_device(ip).mac
        except (LookupError, ValueError):
            return ""

    def _set_bus(self, bus) -> None:
        self._bus = bus

    def _poll_interval(self) -> float:
        return self.cfg.connections.poll_interval_ms / 1000.0

    async def _every(self, interval, fn) -> None:
        while True:
            await asyncio.sleep(interval())
            try:
                fn()
            except Exception:  # one failed read must not end the loop (or starve the watchdog)
                log.exception("periodic task %s failed", getattr(fn, "__name__", fn))

    def _poll(self) -> None:
        self.connects.poll()
        if self.devices is not None:
            self.devices.poll()

    def _tick(self) -> None:
        started = time.perf_counter()
        self.connects.tick()
        if self.devices is not None:
            self.devices.tick()
        self._observe()
        self.notifier.status(self.status_line())
        took = time.perf_counter() - started
        self._ticks += 1
        self._tick_sec += took
        self._recent_ticks.append(took)

    def tick_time(self):
        """The read model's TickTime: what the ticks cost, since the start and over RECENT_TICKS."""
        from netwatchd.read_model import TickTime

        recent = self._recent_ticks
        return TickTime(self._ticks, self._tick_sec, sum(recent) / len(recent) if recent else 0.0,
                        max(recent, default=0.0))

    def _observe(self) -> None:
        """One tick's observation through the detector; what was learnt saved now and then."""
        obs = TickObservation(time_usec=time.time_ns() // 1000)
        self.connects.take_observation(obs)
        if self.devices is not None:
            self.devices.take_observation(obs)
        self.alerting.tick(obs)
        for listener in self._tick_listeners:
            try:
                listener(obs.time_usec)
            except Exception:  # one failing listener must not lose the others, nor the tick
                log.exception("tick listener %r failed", listener)
        big = len(obs.connection_starts) + len(obs.command_starts) > BIG_TICK_STARTS
        if big or self._big_tick_before:
            # a tick of many distinct flows leaves MBs of freed small objects behind; hand the
            # pages back, or RSS keeps the high-water mark of the busiest tick for good. Once more
            # on the first quiet tick after: the drains between the last busy tick and it freed
            # as much again
            return_freed_heap()
        self._big_tick_before = big
        if time.monotonic() - self._last_alert_save >= self.cfg.alerts.state_save_interval_sec:
            self._last_alert_save = time.monotonic()
            self.alerting.save()

    def reload(self) -> None:
        """SIGHUP: re-read the file; a bad file is rejected and the running config stays."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            log.error("reload rejected, keeping the running configuration: %s", e)
        else:
            # restart-only keys (declared in netwatchd/config.py) keep what the start ran with
            restart_keys = restart_only_changes(self.started_cfg, new)
            self.connects.reconfigure(new.connections)
            self.alerting.reconfigure(new.alerts, new.beacons)
            if self.devices is not None:
                self.devices.reconfigure(new.devices)
            logsetup.set_level(new.log_level)
            self.cfg = new
            self._identity = None  # fleet.host_id, fleet.segment
            self.fleet.reconfigure()
            if self._web is not None:
                self._web.reconfigure()  # its auth files
            from netwatchd.api.listen_scope import urls_beyond_localhost, warn_beyond_localhost

            if urls_beyond_localhost(new):
                warn_beyond_localhost(new)
            log.info("configuration reloaded from %s", self.config_path)
            if restart_keys:
                log.warning("changed settings that take effect on restart: %s", ", ".join(restart_keys))
        self.notifier.ready(self.status_line())


def parse_args(argv):
    p = argparse.ArgumentParser(prog="netwatchd", description="eBPF network watcher daemon")
    p.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="YAML configuration file (default %(default)s)")
    p.add_argument("--check-config", metavar="FILE", help="validate FILE and exit: 0 valid, 78 invalid")
    p.add_argument("--version", action="version", version=f"netwatchd {__version__}")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.check_config:
        try:
            load_config(args.check_config)
        except ConfigError as e:
            print(f"netwatchd: {e}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"{args.check_config}: configuration is valid")
        return 0
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"netwatchd: {e}", file=sys.stderr)
        return EXIT_CONFIG
    logsetup.setup_logging(cfg.log_level)
    try:
        return asyncio.run(Daemon(args.config, cfg).run())
    except Exception as e:
        log.error("netwatchd failed: %s", e)
        print(f"netwatchd: {e}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
