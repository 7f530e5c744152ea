"""A small world for the operator-surface tests: a private system bus, a LAN of two namespaces
(`pc`, an IEEE Cisco MAC, and `srv`, an Intel one; tests/integration/lan.py) and a real
netwatchd watching the LAN's bridge ports (devices.interfaces lists them, the one key changed
besides time: the README's commands then show a known set of devices, not the host's). Both devices have exchanged one echoed datagram
(ARP/NDP settled) before the world is handed over, so the daemon knows both with their
addresses. Everything is removed by close(), even when a test fails."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

from tests.conftest import require_root_and_bcc, require_tools, tool
from tests.harness import DaemonProcess, PrivateSystemBus
from tests.integration.lan import UDP_ECHO, Lan, UdpSent

TICK = 0.2
ECHO_PORT = 7000


class LanDaemon:
    def __init__(self) -> None:
        require_root_and_bcc()
        require_tools("ip", "dbus-daemon", "busctl")
        self.tmp = Path(tempfile.mkdtemp(prefix="nwd-landaemon-"))
        self.bus = PrivateSystemBus()
        self.lan = Lan()
        self.daemon: DaemonProcess | None = None

    def open(self) -> "LanDaemon":
        try:
            self.bus.start()
            self.lan.create_bridge()
            self.pc = self.lan.add_node("pc", "00:00:0c:5a:11:01")
            self.srv = self.lan.add_node("srv", "00:1b:21:5a:11:02")
            self.lan.start(self.srv, sys.executable, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
            config: Dict = {"state_directory": str(self.tmp / "state"), "tick_interval_sec": TICK,
                            "devices": {"interfaces": self.lan.ports(), "store_interval_sec": 0.5}}
            self.daemon = DaemonProcess(self.bus, config, about=("devices.interfaces",))
            self.daemon.start()
            self.udp("pc", ECHO_PORT, echo=True)
        except BaseException:
            self.close()
            raise
        return self

    def udp(self, name: str, port: int, count: int = 1, echo: bool = False) -> UdpSent:
        """`count` datagrams from device `name` to srv's IPv4 address, port `port`."""
        return self.lan.send_udp(self.lan.nodes[name], [f"{self.srv.ipv4}:{port}"], count, echo=echo)

    def env(self) -> Dict[str, str]:
        return dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus.address)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([tool("netwatchctl"), *args], env=self.env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def wait(self, done, timeout: float = 10, what: str = "condition"):
        """Polls `done()` until it returns something true; that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = done()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; daemon log:\n{self.daemon.log()[-3000:]}")
            time.sleep(0.1)

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.cleanup()
        self.bus.stop()
        self.lan.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)
        assert not self.lan.leftovers(), "the LAN was not removed"
