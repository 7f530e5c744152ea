"""The client side of org.netwatchd.Netwatchd1, for netwatchctl. Thin: one call, one answer;
and, for `netwatchctl watch`, a subscription to AlertRaised (or PatternSeen).

Errors come back as BusCallError with the D-Bus error name, so the CLI can map them to stable
exit codes and show the daemon's own message.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List, Optional

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from netwatchd.bus_names import BUS_NAME, MANAGER_INTERFACE, OBJECT_PATH

PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"


class BusCallError(Exception):
    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name
        self.message = message


def plain(value: Any) -> Any:
    """Variants and containers of them -> plain Python values."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


async def _connect() -> MessageBus:
    try:
        return await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, EOFError) as e:
        raise BusCallError("org.freedesktop.DBus.Error.NoServer", f"cannot connect to the system bus: {e}") from None


async def _call(member: str, signature: str, body: List[Any], interface: str) -> List[Any]:
    bus = await _connect()
    try:
        reply = await bus.call(
            Message(destination=BUS_NAME, path=OBJECT_PATH, interface=interface,
                    member=member, signature=signature, body=body)
        )
    finally:
        bus.disconnect()
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body else reply.error_name
        raise BusCallError(reply.error_name, str(text))
    return plain(reply.body)


def call(member: str, signature: str = "", *args: Any) -> List[Any]:
    return asyncio.run(_call(member, signature, list(args), MANAGER_INTERFACE))


def get_all_properties() -> dict:
    return asyncio.run(_call("GetAll", "s", [MANAGER_INTERFACE], PROPERTIES_INTERFACE))[0]


# -- netwatchctl devices -------------------------------------------------------------------------

UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
DEVICES_PAGE = 1000  # ListDevicesPage's largest page


def list_devices() -> List[Dict[str, Any]]:
    """Every device's summary, in ListDevices' order, fetched a page at a time (ListDevicesPage),
    so that no reply grows with the inventory; from ListDevices when netwatchd is older than
    ListDevicesPage."""
    return asyncio.run(_list_devices())


async def _list_devices() -> List[Dict[str, Any]]:
    bus = await _connect()
    try:
        devices: Dict[str, Dict[str, Any]] = {}
        offset = 0
        while True:
            try:
                records, total = await _call_on(bus, BUS_NAME, OBJECT_PATH, MANAGER_INTERFACE, "ListDevicesPage",
                                                "uu", [offset, DEVICES_PAGE])
            except BusCallError as e:
                if e.name != UNKNOWN_METHOD or offset:
                    raise
                (records,) = await _call_on(bus, BUS_NAME, OBJECT_PATH, MANAGER_INTERFACE, "ListDevices")
                return records
            # The inventory may change between pages: a device pushed into the next page is not
            # listed twice (one pulled into a page already read, by an eviction, is missed).
            for record in records:
                devices.setdefault(record["mac"], record)
            offset += len(records)
            if not records or offset >= total:
                return list(devices.values())
    finally:
        bus.disconnect()


# -- netwatchctl watch ---------------------------------------------------------------------------

DBUS_NAME, DBUS_PATH, DBUS_INTERFACE = "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus"


def signal_match(member: str) -> str:
    return (f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',"
            f"interface='{MANAGER_INTERFACE}',member='{member}'")


ALERT_MATCH = signal_match("AlertRaised")
OWNER_MATCH = (f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_INTERFACE}',"
               f"member='NameOwnerChanged',arg0='{BUS_NAME}'")
# ListAlerts sizes tried, in turn, to find a signalled alert's record: the newest few almost
# always hold it; a burst of alerts may have pushed it further down.
DETAIL_LIMITS = (100, 1000)


async def _call_on(bus: MessageBus, destination: str, path: str, interface: str, member: str,
                   signature: str = "", body: List[Any] = ()) -> List[Any]:
    reply = await bus.call(Message(destination=destination, path=path, interface=interface, member=member,
                                   signature=signature, body=list(body)))
    if reply.message_type == MessageType.ERROR:
        raise BusCallError(reply.error_name, str(reply.body[0] if reply.body else reply.error_name))
    return plain(reply.body)


async def _alert_record(bus: MessageBus, alert_id: str, seen: Dict[str, Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The signalled alert's full record from ListAlerts; None when it is no longer listed.
    `seen` keeps the records of the last answer: the alerts of one tick arrive together, and
    one ListAlerts call then serves them all."""
    if alert_id in seen:
        return seen.pop(alert_id)
    for limit in DETAIL_LIMITS:
        (records,) = await _call_on(bus, BUS_NAME, OBJECT_PATH, MANAGER_INTERFACE, "ListAlerts", "u", [limit])
        seen.clear()
        seen.update((r["id"], r) for r in records)
        if alert_id in seen or len(records) < limit:
            return seen.pop(alert_id, None)
    return None


async def _disconnected(bus: MessageBus) -> None:
    """Returns when the bus connection is gone, however it went. Shielded: cancelling this
    must not cancel the bus's own future."""
    try:
        await asyncio.shield(bus.wait_for_disconnect())
    except Exception:
        pass


async def watch_alerts(on_alert: Callable[[str, str, str, Optional[Dict[str, Any]]], None],
                       on_note: Callable[[str], None], stop: asyncio.Event) -> None:
    """Calls on_alert(id, kind, subject, record) for every AlertRaised, in order, until `stop`
    is set; see watch_signal."""
    seen: Dict[str, Dict[str, Any]] = {}

    async def handle(bus: MessageBus, alert_id: str, kind: str, subject: str) -> None:
        try:
            record = await _alert_record(bus, alert_id, seen)
        except BusCallError as e:  # e.g. netwatchd stopped in between: the signal is still news
            on_note(f"cannot fetch the details of alert {alert_id}: {e.message}")
            record = None
        on_alert(alert_id, kind, subject, record)

    await watch_signal("AlertRaised", "sss", "alerts", handle, on_note, stop)


async def watch_patterns(on_pattern: Callable[[str, str, int, str, str], None],
                         on_note: Callable[[str], None], stop: asyncio.Event) -> None:
    """Calls on_pattern(mac, peer, port, transport, name) for every PatternSeen until `stop`."""

    async def handle(bus: MessageBus, *pattern: Any) -> None:
        on_pattern(*pattern)

    await watch_signal("PatternSeen", "ssqss", "new patterns", handle, on_note, stop)


async def watch_signal(member: str, signature: str, what: str, handle: Callable[..., Any],
                       on_note: Callable[[str], None], stop: asyncio.Event) -> None:
    """Awaits handle(bus, *body) for every `member` signal of ours, in order, until `stop` is
    set. Keeps watching across restarts of netwatchd (on_note says when it goes and comes
    back). Raises BusCallError when the bus or netwatchd is not there at the start, when the
    policy denies us (we would otherwise wait for signals the bus never delivers), and when the
    bus itself goes away."""
    try:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, EOFError) as e:
        raise BusCallError("org.freedesktop.DBus.Error.NoServer", f"cannot connect to the system bus: {e}") from None
    queue: asyncio.Queue = asyncio.Queue()

    def on_message(msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.interface == MANAGER_INTERFACE and msg.member == member and msg.signature == signature:
            queue.put_nowait(("signal", *msg.body))
        elif msg.interface == DBUS_INTERFACE and msg.member == "NameOwnerChanged" and msg.body[0] == BUS_NAME:
            queue.put_nowait(("owner", msg.body[2]))

    async def deliver() -> None:
        while True:
            item = await queue.get()
            if item[0] == "owner":
                on_note("netwatchd is back" if item[1] else "netwatchd stopped; waiting for it to come back")
                continue
            await handle(bus, *item[1:])

    try:
        bus.add_message_handler(on_message)
        for rule in (signal_match(member), OWNER_MATCH):
            await _call_on(bus, DBUS_NAME, DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [rule])
        # One real call first: not running, or not allowed, is an answer now, not silence later.
        await _call_on(bus, BUS_NAME, OBJECT_PATH, MANAGER_INTERFACE, "ListAlerts", "u", [1])
        on_note(f"watching for {what} (Ctrl-C to stop)")  # subscribed: nothing signalled from now on is missed
        waits = [asyncio.ensure_future(w) for w in (stop.wait(), _disconnected(bus), deliver())]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        for w in done:
            if w.exception() is not None:  # deliver() failed: a broken pipe, a bug
                raise w.exception()
        if not stop.is_set():
            raise BusCallError("org.freedesktop.DBus.Error.NoServer", "the system bus went away")
    finally:
        bus.disconnect()
