"""Real parts for integration tests and benchmarks: a private system bus, an sd_notify
receiver, and netwatchd run as a separate process against them.

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

REPO = Path(__file__).resolve().parent.parent
POLICY = REPO / "systemd" / "org.netwatchd.Netwatchd1.conf"
SHIPPED_CONFIG = REPO / "config" / "netwatchd.yaml"

# The rule (tests/README.md): a daemon under test runs the shipped config/netwatchd.yaml. A test
# may compress time, put its files in its own directory, and change the keys it is about (it
# names them in `about=`, and tests/unit/test_config_rule.py checks that its name says so).
TIME_KEYS = frozenset({"tick_interval_sec", "alerts.learning_period_sec", "alerts.warmup_ticks",
                       "alerts.state_save_interval_sec", "devices.store_interval_sec",
                       "connections.poll_interval_ms"})
ENVIRONMENT_KEYS = frozenset({"state_directory"})


class BusctlError(subprocess.CalledProcessError):
    """A busctl call that failed, with busctl's own words in the message (the D-Bus error)."""

    def __str__(self) -> str:
        return f"{super().__str__()} stderr: {(self.stderr or '').strip()}"


class ConfigRuleError(AssertionError):
    """A test changed a setting that is neither time, nor its files' place, nor what it is about."""


def leaf_paths(config: Dict, prefix: str = "") -> List[str]:
    paths = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        paths += leaf_paths(value, path + ".") if isinstance(value, dict) else [path]
    return paths


def shipped_value(path: str):
    value = yaml.safe_load(SHIPPED_CONFIG.read_text())
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def check_config_rule(overrides: Dict, about=()) -> None:
    """Raises ConfigRuleError for the first override that changes the shipped config without
    being a time setting, the test's own directory, or in `about`."""
    for path in leaf_paths(overrides):
        if path in TIME_KEYS or path in ENVIRONMENT_KEYS:
            continue
        value = overrides
        for key in path.split("."):
            value = value[key]
        if value == shipped_value(path):
            continue
        if any(path == a or path.startswith(a + ".") for a in about):
            continue
        raise ConfigRuleError(f"{path} is not a time setting and not in about={tuple(about)!r}: tests run the "
                              f"shipped config (tests/README.md)")


def shipped_config_with(overrides: Dict, about=()) -> Dict:
    """config/netwatchd.yaml with the test's overrides, after checking them against the rule."""
    check_config_rule(overrides, about)

    def merge(base: Dict, extra: Dict) -> Dict:
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) else value
        return out

    return merge(yaml.safe_load(SHIPPED_CONFIG.read_text()), overrides)
BUS_NAME = "org.netwatchd.Netwatchd1"
OBJECT_PATH = "/org/netwatchd/Netwatchd1"
INTERFACE = "org.netwatchd.Netwatchd1.Manager"


def venv_tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class StartedUntilExit:
    """`with Thing() as t`: start(), and stop() on the way out -- also when start() fails half
    way, so that what it had made (processes, namespaces, files) is not left behind."""

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


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
        self.proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={self.dir / 'system.conf'}", "--nofork", "--nosyslog"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.dir / "dbus.log", "ab"),
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

    def close(self) -> None:
        self._closed.set()
        self._reader.join(5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class DaemonProcess:
    """netwatchd in its own process, on a private bus, with a config the test wrote."""

    def __init__(self, bus: PrivateSystemBus, config: Optional[Dict] = None, watchdog_usec: int = 0,
                 command_prefix: Optional[List[str]] = None, about=()):
        """config: overrides of the shipped config, within the rule (see check_config_rule);
        about: the key paths this test is about, which it may change too.
        command_prefix: what runs netwatchd, e.g. PrivateJournal.command() to start it inside
        the mount namespace of a journald of the test's own (tests/journal_harness.py)."""
        self.bus = bus
        self.about = tuple(about)
        self.command_prefix = list(command_prefix or [])
        self.dir = Path(tempfile.mkdtemp(prefix="nwd-daemon-"))
        self.config_path = self.dir / "netwatchd.yaml"
        self.write_config(config or {})
        self.notify = NotifyReceiver()
        self.watchdog_usec = watchdog_usec
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.dir / "daemon.log"
        self.exec_time = 0.0
        self.ready_time = 0.0

    def write_config(self, config: Dict, about=None) -> None:
        """The shipped config with the test's overrides, state kept in this daemon's own
        temporary directory unless the test says otherwise (never the host's /var/lib/netwatchd).
        The device watcher is on, as shipped (interfaces: auto)."""
        overrides = dict(config)
        overrides.setdefault("state_directory", str(self.dir / "state"))
        config = shipped_config_with(overrides, self.about if about is None else about)
        # NETWATCHD_TEST_TC_ATTACH=tc runs every device test over clsact filters instead of TCX
        # (tests/integration/test_tc_attach.py does, for the device tests): the same product on
        # the attach path older kernels get, so it is no change of behaviour under test
        forced = os.environ.get("NETWATCHD_TEST_TC_ATTACH")
        if forced and "tc_attach" not in (overrides.get("devices") or {}):
            config["devices"] = {**config["devices"], "tc_attach": forced}
        # atomically, as an editor saving the file would: a reload never reads half a file
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config))
        os.replace(tmp, self.config_path)

    def start(self, timeout: float = 90) -> "DaemonProcess":
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus.address, NOTIFY_SOCKET=self.notify.path)
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        self.exec_time = time.monotonic()
        self.proc = subprocess.Popen(
            [*self.command_prefix, venv_tool("netwatchd"), "--config", str(self.config_path)],
            env=env, stdin=subprocess.DEVNULL, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
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
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

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

    def call(self, method: str, signature: str = "", *args) -> object:
        """Call a Manager method with busctl and return the decoded JSON `data`."""
        out = self.busctl("--json=short", "call", BUS_NAME, OBJECT_PATH, INTERFACE, method, signature,
                          *[str(a) for a in args]).stdout
        return json.loads(out)["data"]

    def get_property(self, name: str) -> object:
        out = self.busctl("--json=short", "get-property", BUS_NAME, OBJECT_PATH, INTERFACE, name).stdout
        return json.loads(out)["data"]


def busctl(bus: PrivateSystemBus, *args: str, user: Optional[str] = None, check: bool = True):
    cmd = ["busctl", f"--address={bus.address}", *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user_group(user)}", "--clear-groups", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise BusctlError(r.returncode, cmd, r.stdout, r.stderr)
    return r


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
