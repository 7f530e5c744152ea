"""org.netwatchd.Netwatchd1 on the system bus. The only module that imports the D-Bus library.

It converts between D-Bus and the engine and nothing more: argument checks live in
netwatchd.queries; their InvalidQuery becomes org.freedesktop.DBus.Error.InvalidArgs here.
"""
from __future__ import annotations

import logging
from typing import Any, Dict

from dbus_fast import BusType, DBusError, NameFlag, RequestNameReply, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_property, method

from . import __version__
from .device_monitor import NoSuchDevice, device_answer
from .queries import InvalidQuery

log = logging.getLogger(__name__)

BUS_NAME = "org.netwatchd.Netwatchd1"
OBJECT_PATH = "/org/netwatchd/Netwatchd1"
MANAGER_INTERFACE = "org.netwatchd.Netwatchd1.Manager"
ERROR_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ERROR_FAILED = "org.freedesktop.DBus.Error.Failed"
ERROR_NO_SUCH_DEVICE = "org.netwatchd.Netwatchd1.Error.NoSuchDevice"

# D-Bus type of every field an answer may carry; records are a{sv} so fields can be added.
FIELD_SIGNATURES = {
    "pid": "u",
    "tid": "u",
    "uid": "u",
    "command": "s",
    "commands": "as",
    "duration_sec": "u",
    "total_attempts": "t",
    "succeeded": "t",
    "failed": "t",
    "in_progress": "t",
    "udp_sends": "t",
    "message": "s",
    "kind": "s",
    "family": "s",
    "transport": "s",
    "destination": "s",
    "port": "q",
    "return_code": "i",
    "error": "s",
    "outcome": "s",
    "timestamp_usec": "t",
    # devices
    "mac": "s",
    "vendor": "s",
    "randomized": "b",
    "hostname": "s",
    "hostname_source": "s",
    "first_seen_usec": "t",
    "last_seen_usec": "t",
    "interface": "s",
    "vlan": "q",
    "ipv4": "as",
    "ipv6": "as",
    "counters": "a{st}",
    "tcp_syns": "t",
    "peers": "t",
    "dns_names": "as",
    "http_hosts": "as",
    "tls_names": "as",
    "http_requests": "a(sss)",  # method, host, path
    "recent_peers": "a(sqss)",  # address, port, transport, name it was looked up by
}


def to_vardict(answer: Dict[str, Any]) -> Dict[str, Variant]:
    return {k: Variant(FIELD_SIGNATURES[k], v) for k, v in answer.items()}


class ManagerInterface(ServiceInterface):
    """The Manager interface; `daemon` supplies the engine and the status values."""

    def __init__(self, daemon):
        super().__init__(MANAGER_INTERFACE)
        self._daemon = daemon

    @method()
    def Summary(self, pid: "u", command: "s", duration_sec: "u") -> "a{sv}":  # noqa: F821
        with _as_dbus_errors():
            return to_vardict(self._daemon.connects.summary(pid, command, duration_sec))

    @method()
    def ListConnections(self, pid: "u", limit: "u") -> "aa{sv}b":  # noqa: F821
        with _as_dbus_errors():
            records, truncated = self._daemon.connects.list_connections(pid, limit)
            return [[to_vardict(r) for r in records], truncated]

    @method()
    def ListDevices(self) -> "aa{sv}":  # noqa: F821
        with _as_dbus_errors():
            if self._daemon.devices is None:
                return []
            return [to_vardict(device_answer(d)) for d in self._daemon.devices.list_devices()]

    @method()
    def GetDevice(self, mac_or_ip: "s") -> "a{sv}":  # noqa: F821
        with _as_dbus_errors():
            if self._daemon.devices is None:
                raise NoSuchDevice("device watching is disabled in the configuration (devices.enabled)")
            return to_vardict(device_answer(self._daemon.devices.get_device(mac_or_ip)))

    @dbus_property(access=PropertyAccess.READ)
    def Interfaces(self) -> "as":  # noqa: F821
        return self._daemon.devices.interfaces() if self._daemon.devices is not None else []

    @dbus_property(access=PropertyAccess.READ)
    def DeviceCount(self) -> "u":  # noqa: F821
        return len(self._daemon.devices.devices) if self._daemon.devices is not None else 0

    @dbus_property(access=PropertyAccess.READ)
    def DeviceEventsLost(self) -> "t":  # noqa: F821
        return self._daemon.devices.events_lost() if self._daemon.devices is not None else 0

    @dbus_property(access=PropertyAccess.READ)
    def MalformedFrames(self) -> "t":  # noqa: F821
        return self._daemon.devices.probe.losses()["malformed"] if self._daemon.devices is not None else 0

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> "s":  # noqa: F821
        return __version__

    @dbus_property(access=PropertyAccess.READ)
    def StartedAtUSec(self) -> "t":  # noqa: F821
        return self._daemon.started_at_usec

    @dbus_property(access=PropertyAccess.READ)
    def EventsLost(self) -> "t":  # noqa: F821
        return self._daemon.connects.events_lost()

    @dbus_property(access=PropertyAccess.READ)
    def ProcessesUntracked(self) -> "t":  # noqa: F821
        return self._daemon.connects.processes_untracked()

    @dbus_property(access=PropertyAccess.READ)
    def ConnectAttempts(self) -> "t":  # noqa: F821
        return self._daemon.connects.history.total.attempts

    @dbus_property(access=PropertyAccess.READ)
    def ProgramsAttached(self) -> "as":  # noqa: F821
        return self._daemon.programs_attached()

    @dbus_property(access=PropertyAccess.READ)
    def ConfigFile(self) -> "s":  # noqa: F821
        return self._daemon.config_path


class _as_dbus_errors:
    """Turns the engine's InvalidQuery into InvalidArgs; anything else into a logged Failed."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, DBusError):
            return False
        if isinstance(exc, InvalidQuery):
            raise DBusError(ERROR_INVALID_ARGS, str(exc)) from None
        if isinstance(exc, NoSuchDevice):
            raise DBusError(ERROR_NO_SUCH_DEVICE, str(exc)) from None
        log.exception("D-Bus method failed")
        raise DBusError(ERROR_FAILED, f"internal error: {exc}") from None


async def own_name() -> MessageBus:
    """Connect to the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured) and own our name, before
    anything is loaded: a second netwatchd fails here without touching the kernel."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        bus.disconnect()
        raise RuntimeError(f"cannot own {BUS_NAME} on the system bus (reply {reply!r}): is another netwatchd running?")
    return bus


def export(bus: MessageBus, daemon) -> None:
    bus.export(OBJECT_PATH, ManagerInterface(daemon))

