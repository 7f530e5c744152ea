"""World: what an integration test stands netwatchd in, made by tests/conftest.py's `make_world`
factory and removed at the end of its scope (the module, for the tests that share a daemon) even
when a test fails: a temporary directory, the session's private system bus, a LAN of network
namespaces (lan.py; its bridge made with the first device), optionally a private journald
(journal.py), netwatchd on the shipped config (daemon.py; the state in the world's directory, so
a restart keeps it), and background processes -- each stopped by its pid.

Names carry a random tag: commands a test runs under a name of its own (`command(letter)`:
<prefix><tag><letter>) are its alone on this host, and so are the alerts about them.
"""
from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from netwatchd.alerting.observation import TickObservation
from netwatchd.store.state_files import history_path
from netwatchd.store.tick_history import HistoryError, TickHistory
from tests.support import wait_for
from tests.support.daemon import BusctlError, DaemonProcess, PrivateSystemBus
from tests.support.journal import PrivateJournal
from tests.support.lan import UDP_ECHO, Lan, Node
from tests.support.processes import LineProcess, named_python


class World:
    def __init__(self, bus: PrivateSystemBus, prefix: str = "nww", journal: bool = False,
                 rate_limited: bool = False) -> None:
        """`prefix`: of the world's command names and directory; `journal`: netwatchd runs inside
        a private journald's namespace (with journald's own rate limit when `rate_limited`)."""
        self.bus = bus
        self.prefix = prefix
        self.tmp = Path(tempfile.mkdtemp(prefix=f"nwd-{prefix}-"))
        self.state = self.tmp / "state"
        self.bin = self.tmp / "bin"
        self.bin.mkdir()
        self.tag = secrets.token_hex(3)
        self.lan = Lan()
        self.journal = PrivateJournal(rate_limited=rate_limited) if journal else None
        self.daemons: List[DaemonProcess] = []
        self.procs: List[LineProcess] = []
        self.tick = 1.0

    def start(self) -> "World":
        try:
            if self.journal is not None:
                self.journal.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    # -- names --------------------------------------------------------------------------------
    @property
    def d(self) -> DaemonProcess:
        """The world's newest daemon."""
        return self.daemons[-1]

    def node(self, name: str) -> Node:
        return self.lan.nodes[name]

    def command(self, letter: str) -> str:
        return f"{self.prefix}{self.tag}{letter}"

    def link(self, name: str, target: Optional[str] = None) -> str:
        """A symlink bin/<name> to `target` (default: this Python), exec'd under that name: its
        comm, and what netwatchd reports about it, is `name`."""
        if target is None:
            return str(named_python(self.bin, name, copy=False))
        (self.bin / name).symlink_to(target)
        return str(self.bin / name)

    # -- starting things ------------------------------------------------------------------------
    def start_daemon(self, overrides: Optional[Dict] = None, about=(), **options) -> DaemonProcess:
        """netwatchd on the shipped config with `overrides` (within the rule: `about` names the
        keys the test is about), its state in the world's directory; inside the world's journald
        when it has one. `options`: DaemonProcess's (watchdog_usec, command_prefix)."""
        overrides = {"state_directory": str(self.state), **(overrides or {})}
        self.tick = overrides.get("tick_interval_sec", self.tick)
        if self.journal is not None:
            options.setdefault("command_prefix", self.journal.command())
        d = DaemonProcess(self.bus, overrides, about=about, **options)
        self.daemons.append(d)
        return d.start()

    def spawn(self, argv: List[str], ready: Optional[str] = "ready", ends_on_stdin_eof: bool = True,
              timeout: float = 30) -> LineProcess:
        """A background process in the host namespace, read line by line, stopped by pid at the
        end; with `ready`, once it printed that line."""
        proc = LineProcess([str(a) for a in argv], self.bus, ends_on_stdin_eof=ends_on_stdin_eof)
        self.procs.append(proc)
        if ready is not None:
            proc.wait_line(ready, timeout=timeout)
        return proc

    def python(self, script: str, *args, name: Optional[str] = None, **kw) -> LineProcess:
        """spawn() of a Python script, under the command name `name` (see link()) when given."""
        exe = self.link(name) if name else sys.executable
        return self.spawn([exe, "-c", script, *args], **kw)

    # -- reading the daemon ----------------------------------------------------------------------
    def daemon_log(self) -> str:
        if self.journal is not None:
            return self.journal.journalctl("-o", "short-precise", "SYSLOG_IDENTIFIER=netwatchd",
                                           check=False).stdout[-6000:]
        return self.d.log()[-6000:] if self.daemons else ""

    def wait(self, condition: Callable, timeout: float = 10, what: str = "the condition", interval: float = 0.1):
        """wait_for(), with the daemon's log when it times out."""
        return wait_for(condition, timeout, what, interval, detail=self.daemon_log)

    def alerts(self) -> List[Dict]:
        """ListAlerts, oldest first (alerts.json keeps them across restarts)."""
        try:
            return self.d.alerts()
        except BusctlError as e:  # say why: a daemon that died, or one that stopped answering
            raise AssertionError(f"ListAlerts failed: {e}; daemon exit status {self.d.proc.poll()}\n"
                                 f"{self.daemon_log()}") from None

    def alert_for(self, kind: str, subject: str, timeout: float = 15) -> Dict:
        """The first alert of `kind` on `subject`, once there is one."""
        return self.wait(lambda: next((a for a in self.alerts() if (a["kind"], a["subject"]) == (kind, subject)),
                                      None), timeout, f"{kind} on {subject}")

    def devices(self) -> Dict[str, Dict]:
        """Every device, whole (GetDevice), by MAC."""
        return self.d.devices()

    def wait_devices(self, done: Callable[[Dict[str, Dict]], bool], timeout: float = 10) -> Dict[str, Dict]:
        """The devices once `done` holds for them (the caller's asserts then explain a timeout),
        read again three ticks later, so that anything counted twice would show too."""
        try:
            wait_for(lambda: done(self.devices()), timeout, interval=self.tick / 2)
        except AssertionError:
            pass
        time.sleep(3 * self.tick + 0.1)
        return self.devices()

    def ctl(self, *args: str, **kw):
        """netwatchctl on the world's bus."""
        return self.d.ctl(*args, **kw)

    def ticks(self, until_usec: int = 0, timeout: float = 10) -> List[TickObservation]:
        """The daemon's ticks as its replay history recorded them (written every
        alerts.state_save_interval_sec); with `until_usec`, once the history reaches it."""
        def read() -> List[TickObservation]:
            try:
                with TickHistory.open_readonly(history_path(str(self.state))) as h:
                    return list(h.read())
            except HistoryError:
                return []
        if not until_usec:
            return read()
        return self.wait(lambda: (lambda t: t if t and t[-1].time_usec >= until_usec else None)(read()), timeout,
                         f"the tick history to reach {until_usec}", interval=0.2)

    def wait_ticks(self, after_usec: int, n: int, timeout: Optional[float] = None) -> List[TickObservation]:
        """Until the daemon has processed (and recorded) `n` ticks after `after_usec`: those ticks."""
        return self.wait(lambda: (lambda t: t if len(t) >= n else None)(
            [t for t in self.ticks() if t.time_usec > after_usec]), timeout or n * self.tick * 4 + 15,
            f"{n} recorded ticks after {after_usec}", interval=0.2)

    def first_tick(self, after_usec: int, saw: Callable[[TickObservation], bool], timeout: float = 20) -> int:
        """Time of the first recorded tick after `after_usec` whose observation `saw` the event."""
        return self.wait(lambda: next((t.time_usec for t in self.ticks() if t.time_usec > after_usec and saw(t)),
                                      None), timeout, "a tick that saw the event", interval=0.2)

    # -- teardown ---------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Every step, whatever the one before did; then the LAN must be gone."""
        steps: List[Callable] = [p.stop for p in self.procs] + [d.cleanup for d in self.daemons] + [self.lan.cleanup]
        if self.journal is not None:
            steps.append(self.journal.stop)
        errors = []
        for step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - reported below, after the rest is cleaned
                errors.append(f"{step}: {e}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.lan.nodes and self.lan.leftovers():
            errors.append(f"the LAN was not removed: {self.lan.leftovers()}")
        if errors:
            raise RuntimeError("cleanup: " + "; ".join(errors))

    def __enter__(self) -> "World":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


ECHO_PORT = 7000


def two_devices(w: World, tick: float = 0.2) -> World:
    """The operator-surface tests' LAN: `pc` (an IEEE Cisco MAC) and `srv` (Intel, a UDP echo on
    ECHO_PORT), and netwatchd watching the LAN's ports (devices.interfaces: the README's commands
    then show a known set of devices, not the host's). The two have exchanged one echoed datagram
    (ARP/NDP settled), so the daemon knows both with their addresses."""
    w.pc = w.lan.add_node("pc", "00:00:0c:5a:11:01")
    w.srv = w.lan.add_node("srv", "00:1b:21:5a:11:02")
    w.lan.start(w.srv, sys.executable, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
    w.start_daemon({"tick_interval_sec": tick, "devices": {"interfaces": w.lan.ports(), "store_interval_sec": 0.5}},
                   about=("devices.interfaces",))
    w.lan.send_udp(w.pc, [f"{w.srv.ipv4}:{ECHO_PORT}"], 1, echo=True)
    return w
