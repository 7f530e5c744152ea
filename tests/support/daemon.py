"""Real parts for integration tests and benchmarks: a private system bus, an sd_notify
receiver, netwatchd run as a separate process against them (on the shipped config, within the
rule: config_rule.py), and the clients that ask it things (busctl, dbus-send, netwatchctl).

Everything here is started by pid and stopped by that pid, even when a test fails.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import yaml

from tests.support import wait_for
from tests.support.config_rule import shipped_config_with
from tests.support.processes import StartedUntilExit

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "systemd" / "org.netwatchd.Netwatchd1.conf"
HOST_JOURNAL_SOCKET = "/run/systemd/journal/socket"

class BusctlError(subprocess.CalledProcessError):
    """A busctl call that failed, with busctl's own words in the message (the D-Bus error)."""

    def __str__(self) -> str:
        return f"{super().__str__()} stderr: {(self.stderr or '').strip()}"


BUS_NAME = "org.netwatchd.Netwatchd1"
OBJECT_PATH = "/org/netwatchd/Netwatchd1"
INTERFACE = "org.netwatchd.Netwatchd1.Manager"


def venv_tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class PrivateSystemBus(StartedUntilExit):
    """A dbus-daemon with the distro's system-bus semantics (deny by default, runs as
    messagebus) and only this project's policy added, on a socket of its own."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-bus-"))
        os.chmod(self.dir, 0o755)  # the daemon drops to messagebus; clients may be unprivileged
        self.socket = self.dir / "system_bus_socket"
        self.address = f"unix:path={self.socket}"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "PrivateSystemBus":
        policy_dir = self.dir / "system.d"
        policy_dir.mkdir()
        shutil.copy(POLICY, policy_dir / POLICY.name)
        conf = Path("/usr/share/dbus-1/system.conf").read_text()
        conf = re.sub(r"<fork/>|<syslog/>|<pidfile>.*?</pidfile>|<standard_system_servicedirs/>", "", conf)
        conf = re.sub(r"<servicehelper>.*?</servicehelper>", "", conf)
        conf = re.sub(r"<listen>.*?</listen>", f"<listen>{self.address}</listen>", conf)
        conf = re.sub(r"<includedir>.*?</includedir>", f"<includedir>{policy_dir}</includedir>", conf)
        (self.dir / "system.conf").write_text(conf)
        self._launch()
        return self

    def _launch(self) -> None:
        with open(self.dir / "dbus.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                ["dbus-daemon", f"--config-file={self.dir / 'system.conf'}", "--nofork", "--nosyslog"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dbus-daemon did not start: " + (self.dir / "dbus.log").read_text())
            time.sleep(0.02)

    def restart(self) -> None:
        """A new dbus-daemon on the same socket, as after `systemctl restart dbus`: every client's
        connection ends, names are free again."""
        self.proc.terminate()
        self.proc.wait(10)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # dbus-daemon may leave it; the new one must not see a stale one
        self._launch()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class NotifyReceiver:
    """Plays systemd's side of sd_notify: reads the socket in the background, as systemd does.

    Left unread, the socket's queue fills after net.unix.max_dgram_qlen (10) datagrams and the
    daemon's next sd_notify (a blocking send) would stall its event loop.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-notify-"))
        self.path = str(self.dir / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: List[str] = []
        self.times: List[float] = []  # time.monotonic() each message arrived, as systemd would see it
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                message = self.sock.recv(4096).decode()
                self.times.append(time.monotonic())
                self.messages.append(message)
            except socket.timeout:
                continue
            except OSError:
                return

    def index_of(self, line: str, since: int = 0, timeout: float = 15, alive=None) -> int:
        """Index of the first message at or after `since` that has `line` as one of its lines;
        -1 on timeout or when `alive()` turns false first."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(since, len(self.messages)):
                if line in self.messages[i].split("\n"):
                    return i
            if time.monotonic() > deadline or (alive is not None and not alive()):
                return -1
            time.sleep(0.02)

    def wait_for(self, line: str, timeout: float, alive=None) -> bool:
        return self.index_of(line, 0, timeout, alive) >= 0

    def wait_line(self, line: str, since: int = 0, timeout: float = 15) -> int:
        """Index of the first message at or after `since` with `line` as one of its lines."""
        i = self.index_of(line, since, timeout)
        if i < 0:
            raise AssertionError(f"no {line!r} after message {since}: {self.messages[since:]!r}")
        return i

    def close(self) -> None:
        self._closed.set()
        self._reader.join(5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class DaemonProcess:
    """netwatchd in its own process, on a private bus, with a config the test wrote."""

    def __init__(self, bus: PrivateSystemBus, config: Optional[Dict] = None, watchdog_usec: int = 0,
                 command_prefix: Optional[List[str]] = None, about=()):
        """config: overrides of the shipped config, within the rule (tests/support/config_rule.py);
        about: the key paths this test is about, which it may change too.
        command_prefix: what runs netwatchd, e.g. PrivateJournal.command() to start it inside
        the mount namespace of a journald of the test's own (tests/support/journal.py)."""
        self.bus = bus
        self.about = tuple(about)
        self.command_prefix = list(command_prefix or [])
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-daemon-"))
        self.config_path = self.dir / "netwatchd.yaml"
        # where its state is kept: its own directory unless the test says otherwise; a later
        # write_config (a reload) keeps it unless it says otherwise again
        self.state_directory = (config or {}).get("state_directory") or str(self.dir / "state")
        self.write_config(config or {})
        self.notify = NotifyReceiver()
        self.watchdog_usec = watchdog_usec
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.dir / "daemon.log"
        self.exec_time = 0.0
        self.ready_time = 0.0

    def write_config(self, config: Dict, about=()) -> None:
        """The shipped config with the test's overrides (checked by the rule against the keys
        this daemon was started about, and those of this call: a reload's own), state kept in this
        daemon's own temporary directory unless the test says otherwise (never the host's
        /var/lib/netwatchd). Written atomically, as an editor saving the file would: a reload
        never reads half a file."""
        overrides = dict(config)
        overrides.setdefault("state_directory", self.state_directory)
        text = yaml.safe_dump(shipped_config_with(overrides, self.about + tuple(about)))
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def reload(self, content, about=()) -> int:
        """Writes the config (overrides as a dict, or a file's raw text), sends SIGHUP, waits for
        RELOADING=1 then READY=1; returns the index of the RELOADING=1 message."""
        if isinstance(content, dict):
            self.write_config(content, about)
        else:
            self.config_path.write_text(content)
        time.sleep(0.15)  # what was sent before is read: the next message is the reload's
        since = len(self.notify.messages)
        self.signal(signal.SIGHUP)
        reloading = self.notify.wait_line("RELOADING=1", since)
        self.notify.wait_line("READY=1", reloading + 1)
        return reloading

    def wait_log(self, needle: str, timeout: float = 10) -> str:
        """The daemon's log once it holds `needle`."""
        return wait_for(lambda: needle in self.log() and self.log(), timeout, repr(needle), detail=self.log)

    def start(self, timeout: float = 90) -> "DaemonProcess":
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus.address, NOTIFY_SOCKET=self.notify.path)
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        self.exec_time = time.monotonic()
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [*self.command_prefix, venv_tool("netwatchd"), "--config", str(self.config_path)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        if not self.notify.wait_for("READY=1", timeout, alive=lambda: self.proc.poll() is None):
            log = self.log()
            self.stop()
            raise RuntimeError(f"netwatchd did not become ready:\n{log}")
        self.ready_time = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        """What the daemon logged: its stderr, and the host's journal when it logs there."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if os.path.exists(HOST_JOURNAL_SOCKET) and not self.command_prefix and self.proc is not None:
            text += subprocess.run(["journalctl", "--no-pager", "-o", "cat", f"_PID={self.pid}"],
                                   capture_output=True, text=True, timeout=30).stdout
        return text

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        self.notify.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def busctl(self, *args: str, user: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
        return busctl(self.bus, *args, user=user, check=check)

    def ctl(self, *args: str, prefix=None, timeout: float = 60) -> subprocess.CompletedProcess:
        return ctl(self.bus, *args, prefix=prefix, timeout=timeout)

    def call(self, method: str, signature: str = "", *args) -> object:
        """Call a Manager method with busctl and return the decoded JSON `data`."""
        out = self.busctl("--json=short", "call", BUS_NAME, OBJECT_PATH, INTERFACE, method, signature,
                          *[str(a) for a in args]).stdout
        return json.loads(out)["data"]

    def get_property(self, name: str) -> object:
        out = self.busctl("--json=short", "get-property", BUS_NAME, OBJECT_PATH, INTERFACE, name).stdout
        return json.loads(out)["data"]

    def alerts(self) -> List[Dict]:
        """ListAlerts, oldest first (alerts.json keeps them across restarts)."""
        return [unvariant(r) for r in reversed(self.call("ListAlerts", "u", 1000)[0])]

    def device(self, key: str) -> Dict:
        return unvariant(self.call("GetDevice", "s", key)[0])

    def devices(self) -> Dict[str, Dict]:
        """Every device by MAC with all its fields: ListDevices lists summaries (no name lists),
        GetDevice gives each one whole. A device gone in between (expired) is left out."""
        whole = {}
        for summary in map(unvariant, self.call("ListDevices")[0]):
            try:
                whole[summary["mac"]] = self.device(summary["mac"])
            except BusctlError as e:
                if "no device with MAC" not in e.stderr:
                    raise
        return whole


def busctl(bus: PrivateSystemBus, *args: str, user: Optional[str] = None, check: bool = True):
    cmd = ["busctl", f"--address={bus.address}", *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user_group(user)}", "--clear-groups", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise BusctlError(r.returncode, cmd, r.stdout, r.stderr)
    return r


def ctl(bus: PrivateSystemBus, *args: str, prefix=None, timeout: float = 60) -> subprocess.CompletedProcess:
    """netwatchctl on `bus` (as whoever `prefix` makes it)."""
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    return subprocess.run([*(prefix or []), venv_tool("netwatchctl"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def as_user(user: str, group: str, groups: Optional[List[str]] = None) -> List[str]:
    """setpriv prefix running a command as `user` with primary `group` and exactly `groups`
    as supplementary groups (none when not given)."""
    supplementary = [f"--groups={','.join(groups)}"] if groups else ["--clear-groups"]
    return ["setpriv", f"--reuid={user}", f"--regid={group}", *supplementary]


def dbus_send_error(bus: PrivateSystemBus, method: str, args: List[str], prefix: Optional[List[str]] = None,
                    interface: str = INTERFACE) -> Tuple[str, str]:
    """Calls a method with dbus-send (which, unlike busctl, prints the D-Bus error name) and
    returns (error name, message); ("", "") when the call succeeded."""
    cmd = [*(prefix or []), "dbus-send", f"--bus={bus.address}", "--print-reply", f"--dest={BUS_NAME}",
           OBJECT_PATH, f"{interface}.{method}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode == 0:
        return "", ""
    first = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
    if not first.startswith("Error "):
        raise AssertionError(f"unexpected dbus-send failure: {r.stderr!r}")
    name, _, message = first[len("Error "):].partition(": ")
    return name, message


def user_group(user: str) -> str:
    import grp
    import pwd

    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def fd_infos(pid: int) -> Iterator[Tuple[str, Dict[str, str]]]:
    """(what it is, e.g. anon_inode:bpf-prog, and its /proc fdinfo fields) of each fd of a process;
    fds closed meanwhile are skipped."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        yield target, {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def unvariant(record: Dict) -> Dict:
    """{'pid': {'type': 'u', 'data': 1}} -> {'pid': 1}, as busctl --json prints a{sv}."""
    return {k: v["data"] for k, v in record.items()}
