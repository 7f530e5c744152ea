"""org.netwatchd.Netwatchd1 on the system bus: the D-Bus service. The daemon side's only
D-Bus library importer (netwatchctl's client, netwatchd.ctl.bus_client, is the other).

It converts between D-Bus and the read model (netwatchd/read_model.py) it is handed, and nothing
more: argument checks live behind the read model (the engines' queries); their InvalidQuery becomes
org.freedesktop.DBus.Error.InvalidArgs here, NoSuchDevice org.netwatchd.Netwatchd1.Error.NoSuchDevice.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from dbus_fast import BusType, DBusError, NameFlag, RequestNameReply, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_property, method

try:
    from dbus_fast.service import dbus_signal
except ImportError:  # dbus-fast < 2 (Debian 12's python3-dbus-fast 1.84) names it `signal`
    from dbus_fast.service import signal as dbus_signal

from netwatchd.bus_names import (
    BUS_NAME,
    ERROR_FAILED,
    ERROR_INVALID_ARGS,
    ERROR_NO_SUCH_DEVICE,
    MANAGER_INTERFACE,
    OBJECT_PATH,
)
from netwatchd.api.bus_backpressure import tolerate_full_socket
from netwatchd.errors import InvalidQuery, NoSuchDevice
from netwatchd.read_model import Alert, ReadModel

log = logging.getLogger(__name__)


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
    "refused": "t",
    "timed_out": "t",
    "other_failed": "t",
    "unknown": "t",
    "latency_p50_usec": "t",
    "latency_p90_usec": "t",
    "latency_p99_usec": "t",
    "latency_samples": "t",
    "latency_usec": "u",
    "end_error": "s",
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
    "confirmed": "b",
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
    # alerts
    "id": "s",
    "subject": "s",
    "observed": "d",
    "baseline": "d",
    "score": "d",
    "priority": "i",
    "details": "a{ss}",
}


def to_vardict(answer: Dict[str, Any]) -> Dict[str, Variant]:
    return {k: Variant(FIELD_SIGNATURES[k], v) for k, v in answer.items()}


# dbus-daemon's max_message_size on the system bus (/usr/share/dbus-1/system.conf: 32 MiB): a
# bigger message gets its sender disconnected. Less a margin for the reply's header.
BUS_MESSAGE_MAX = 32 * 1024 * 1024
REPLY_BODY_MAX = BUS_MESSAGE_MAX - 64 * 1024
ERROR_LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"


def _text_bytes(texts) -> int:
    return sum(len(t.encode()) for t in texts)


def _size_bound(value: Any) -> int:
    """At least as many bytes as D-Bus marshals `value` into, whatever its integer or container
    type: a string is charged 8 (padding to 4, its length, NUL) besides its bytes, a number 16
    (8 bytes, 7 of padding), a container 16 (its length, padding to its first element), a dict
    entry 8 more (its padding to 8)."""
    if isinstance(value, str):
        return 8 + len(value.encode())
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and all(isinstance(v, (int, float)) for v in value.values()):
            return 16 + len(value) * (8 + 8 + 16) + _text_bytes(value)  # a{st} (counters) quickly
        return 16 + sum(8 + _size_bound(k) + _size_bound(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return 16 + 8 * len(value) + _text_bytes(value)  # as (addresses) quickly
        return 16 + sum(_size_bound(v) for v in value)
    return 16


def records_size_bound(records: List[Dict[str, Any]]) -> int:
    """At least the size of `records` marshalled as aa{sv}, each field typed by FIELD_SIGNATURES."""
    return 16 + sum(16 + sum(8 + _size_bound(k) + 2 + len(FIELD_SIGNATURES[k]) + _size_bound(v)
                             for k, v in r.items()) for r in records)


def list_devices_answer(summaries: List[Dict[str, Any]]) -> List[Dict[str, Variant]]:
    """ListDevices' answer: every device's summary, or LimitsExceeded when they could not go out
    as one message (only an inventory far beyond the shipped devices.max_devices comes near)."""
    size = records_size_bound(summaries)
    if size > REPLY_BODY_MAX:
        raise DBusError(ERROR_LIMITS_EXCEEDED,
                        f"{len(summaries)} devices do not fit in one D-Bus message (up to {size / 2**20:.0f} MiB; "
                        f"the system bus carries at most {BUS_MESSAGE_MAX // 2**20} MiB): ask ListDevicesPage")
    return [to_vardict(s) for s in summaries]


def alert_answer(alert: Alert) -> Dict[str, Any]:
    """One ListAlerts record, with the types its signature promises (the detector may hand
    over an int where a double is due)."""
    answer = alert.to_dict()
    for key in ("observed", "baseline", "score"):
        answer[key] = float(answer[key])
    answer["details"] = {str(k): str(v) for k, v in answer["details"].items()}
    return answer


class ManagerInterface(ServiceInterface):
    """The Manager interface over a ReadModel (netwatchd/read_model.py)."""

    def __init__(self, model: ReadModel):
        super().__init__(MANAGER_INTERFACE)
        self._model = model

    @method()
    def Summary(self, pid: "u", command: "s", duration_sec: "u") -> "a{sv}":  # noqa: F821
        with _as_dbus_errors():
            self._model.refresh()  # exact up to this call, not up to the last tick
            return to_vardict(self._model.summary(pid, command, duration_sec))

    @method()
    def ListConnections(self, pid: "u", limit: "u") -> "aa{sv}b":  # noqa: F821
        with _as_dbus_errors():
            self._model.refresh()
            records, truncated = self._model.list_connections(pid, limit)
            return [[to_vardict(r) for r in records], truncated]

    # Devices as summaries (no name lists: GetDevice has them), so that the reply stays far below
    # the bus's message limit (32 MiB): 4096 devices take 6 MiB, 18 MiB with every field at its
    # longest (tests/unit/test_device_answers.py). ListDevicesPage serves any inventory.
    @method()
    def ListDevices(self) -> "aa{sv}":  # noqa: F821
        with _as_dbus_errors():
            return list_devices_answer(self._model.device_summaries())

    @method()
    def ListDevicesPage(self, offset: "u", limit: "u") -> "aa{sv}u":  # noqa: F821
        with _as_dbus_errors():
            records, total = self._model.device_page(offset, limit)  # limit: 0 = 100, <= 1000
            return [[to_vardict(r) for r in records], total]

    @method()
    def GetDevice(self, mac_or_ip: "s") -> "a{sv}":  # noqa: F821
        with _as_dbus_errors():
            return to_vardict(self._model.device(mac_or_ip))

    @method()
    def ListAlerts(self, limit: "u") -> "aa{sv}":  # noqa: F821
        with _as_dbus_errors():
            alerts = self._model.newest_alerts(limit)  # limit: 0 = 100, <= 1000; none while alerts are off
            return [to_vardict(alert_answer(a)) for a in alerts]

    # Broadcast to every subscriber the bus policy lets receive it (root, group netwatchd), so
    # it carries only what names the alert; the details stay behind ListAlerts.
    @dbus_signal()
    def AlertRaised(self, id: str, kind: str, subject: str) -> "sss":  # noqa: F821
        return [id, kind, subject]

    # One per first-seen (device, peer, port, transport), as the TC classifier reports it: the
    # feed of `netwatchctl watch --patterns`. Same receivers as AlertRaised (the policy's rules
    # are per sender); `name` is the DNS name the device looked the peer up by, or "".
    @dbus_signal()
    def PatternSeen(self, mac: str, peer: str, port: int, transport: str, name: str) -> "ssqss":  # noqa: F821
        return [mac, peer, port, transport, name]

    @dbus_property(access=PropertyAccess.READ)
    def Learning(self) -> "b":  # noqa: F821
        return self._model.learning()

    # An empty AlertCounts says alerts are off (netwatchctl status shows "off"): the counts the
    # log keeps meanwhile (since it was made, persisted across restarts) stay behind it.
    @dbus_property(access=PropertyAccess.READ)
    def AlertCounts(self) -> "a{st}":  # noqa: F821
        return self._model.alert_counts() if self._model.alerts_enabled() else {}

    @dbus_property(access=PropertyAccess.READ)
    def AlertsRaised(self) -> "t":  # noqa: F821
        return sum(self._model.alert_counts().values()) if self._model.alerts_enabled() else 0

    @dbus_property(access=PropertyAccess.READ)
    def Interfaces(self) -> "as":  # noqa: F821
        return self._model.interfaces()

    @dbus_property(access=PropertyAccess.READ)
    def DeviceCount(self) -> "u":  # noqa: F821
        return self._model.device_count()

    @dbus_property(access=PropertyAccess.READ)
    def ProtocolTotals(self) -> "a{st}":  # noqa: F821
        """Packets seen on the monitored interfaces, per protocol (both directions)."""
        return self._model.protocol_totals()

    @dbus_property(access=PropertyAccess.READ)
    def DeviceEventsLost(self) -> "t":  # noqa: F821
        return self._model.events_lost().device

    @dbus_property(access=PropertyAccess.READ)
    def Dropped(self) -> "a{st}":  # noqa: F821
        """What the bounded tables dropped to stay bounded, by what (ReadModel.dropped)."""
        return self._model.dropped()

    @dbus_property(access=PropertyAccess.READ)
    def MalformedFrames(self) -> "t":  # noqa: F821
        return self._model.malformed_frames()

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> "s":  # noqa: F821
        return self._model.version()

    @dbus_property(access=PropertyAccess.READ)
    def StartedAtUSec(self) -> "t":  # noqa: F821
        return self._model.started_at_usec()

    @dbus_property(access=PropertyAccess.READ)
    def EventsLost(self) -> "t":  # noqa: F821
        return self._model.events_lost().connect

    @dbus_property(access=PropertyAccess.READ)
    def ProcessesUntracked(self) -> "t":  # noqa: F821
        return self._model.processes_untracked()

    @dbus_property(access=PropertyAccess.READ)
    def HandshakesUntracked(self) -> "t":  # noqa: F821
        """Non-blocking TCP connects whose outcome could not be followed (counted unknown)."""
        return self._model.handshakes_untracked()

    @dbus_property(access=PropertyAccess.READ)
    def LatencySamplesLost(self) -> "t":  # noqa: F821
        """Handshake latencies not added to the kernel's histograms (their map was full)."""
        return self._model.latency_samples_lost()

    @dbus_property(access=PropertyAccess.READ)
    def ConnectAttempts(self) -> "t":  # noqa: F821
        self._model.refresh()  # exact up to this read, as Summary is
        return self._model.connect_attempts()

    @dbus_property(access=PropertyAccess.READ)
    def ProgramsAttached(self) -> "as":  # noqa: F821
        return self._model.programs_attached()

    @dbus_property(access=PropertyAccess.READ)
    def ConfigFile(self) -> "s":  # noqa: F821
        return self._model.config_path()

    @dbus_property(access=PropertyAccess.READ)
    def KernelRelease(self) -> "s":  # noqa: F821
        return self._model.kernel_release()

    @dbus_property(access=PropertyAccess.READ)
    def HostId(self) -> "s":  # noqa: F821
        """This host's id in the fleet's labels and journal fields (fleet.host_id or /etc/machine-id)."""
        return self._model.host_identity().host

    @dbus_property(access=PropertyAccess.READ)
    def Segments(self) -> "a{ss}":  # noqa: F821
        """The segment id of each watched interface (fleet.segment, or prefix@gateway MAC)."""
        return dict(self._model.host_identity().segments)

    # Empty while fleet.alertmanager_urls is: delivery to Alertmanager is off.
    @dbus_property(access=PropertyAccess.READ)
    def FleetDelivery(self) -> "a{st}":  # noqa: F821
        """Alerts spooled, firing, delivered and dropped, and failed requests by "<url> <cause>"."""
        fleet = self._model.fleet_status()
        if not fleet.enabled:
            return {}
        out = {"spooled": fleet.spooled, "firing": fleet.firing, "delivered": fleet.delivered, "dropped": fleet.dropped}
        out.update((f"failed {url} {cause}", n) for url, cause, n in fleet.failures)
        return out

    @dbus_property(access=PropertyAccess.READ)
    def KernelFallbacks(self) -> "as":  # noqa: F821
        """What this kernel gives another way, or not at all (empty on a kernel with everything)."""
        return self._model.kernel_fallbacks()


def _name_signal_args(signal_method, names) -> None:
    """dbus-fast leaves signal arguments unnamed in the introspection data; name them, so that
    `gdbus introspect` shows AlertRaised(s id, s kind, s subject). Cosmetic: skipped quietly if
    a dbus-fast version keeps this elsewhere."""
    signal = getattr(signal_method, "__dict__", {}).get("__DBUS_SIGNAL")
    for arg, name in zip(getattr(getattr(signal, "introspection", None), "args", []), names):
        arg.name = name


_name_signal_args(ManagerInterface.AlertRaised, ("id", "kind", "subject"))
_name_signal_args(ManagerInterface.PatternSeen, ("mac", "peer", "port", "transport", "name"))


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
    tolerate_full_socket(bus)  # a burst of signals to a slow bus daemon must not end the connection
    reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        bus.disconnect()
        raise RuntimeError(f"cannot own {BUS_NAME} on the system bus (reply {reply!r}): is another netwatchd running?")
    return bus


class DBusAlertSink:
    """An alert sink (read_model.AlertSink; the alert pipeline calls emit): AlertRaised on the
    bus for each new alert.

    Must be called from the event loop the bus runs on, as the pipeline's tick is."""

    def __init__(self, interface: ManagerInterface):
        self._interface = interface

    def emit(self, alert: Alert) -> None:
        self._interface.AlertRaised(alert.id, alert.kind, alert.subject)


def export(bus: MessageBus, model: ReadModel) -> ManagerInterface:
    """Serves `model` on the bus: each alert raised goes out as AlertRaised, each new pattern
    (when devices are watched) as PatternSeen, registered through the read model."""
    interface = ManagerInterface(model)
    serve(bus, interface)
    model.add_alert_sink(DBusAlertSink(interface))
    model.add_pattern_listener(interface.PatternSeen)
    return interface


def serve(bus: MessageBus, interface: ManagerInterface) -> None:
    """Puts an existing interface on a (new) connection: after the bus was lost, the same object,
    with its listeners and sinks, is served again."""
    bus.export(OBJECT_PATH, interface)
