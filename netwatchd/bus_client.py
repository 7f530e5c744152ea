"""The client side of org.netwatchd.Netwatchd1, for netwatchctl. Thin: one call, one answer.

Errors come back as BusCallError with the D-Bus error name, so the CLI can map them to stable
exit codes and show the daemon's own message.
"""
from __future__ import annotations

import asyncio
from typing import Any, List

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from .dbus_service import BUS_NAME, MANAGER_INTERFACE, OBJECT_PATH

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


async def _call(member: str, signature: str, body: List[Any], interface: str) -> List[Any]:
    try:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, EOFError) as e:
        raise BusCallError("org.freedesktop.DBus.Error.NoServer", f"cannot connect to the system bus: {e}") from None
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
