"""A plain subscriber to one of netwatchd's signals, for the bus-policy tests, run as any user
(setpriv):

    python signal_subscriber.py AlertRaised     (or PatternSeen; DBUS_SYSTEM_BUS_ADDRESS says which bus)

stdout: "subscribed" once the match rule is in place, then "signal <json body>" per signal of
that member delivered to us. stdin "sync\\n" answers "synced" after one round trip to the bus:
a signal the bus delivered before that answer has been printed before it, so a test can tell
"not delivered" from "not yet". Ends when stdin closes.
"""
from __future__ import annotations

import asyncio
import json
import sys

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from netwatchd.bus_names import MANAGER_INTERFACE
from netwatchd.ctl.bus_client import DBUS_INTERFACE, DBUS_NAME, DBUS_PATH, signal_match


def bus_call(member: str, signature: str = "", body=()) -> Message:
    return Message(destination=DBUS_NAME, path=DBUS_PATH, interface=DBUS_INTERFACE, member=member,
                   signature=signature, body=list(body))


async def main(member: str) -> None:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()

    def on_message(msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.interface == MANAGER_INTERFACE and msg.member == member:
            print("signal " + json.dumps(msg.body), flush=True)

    bus.add_message_handler(on_message)
    reply = await bus.call(bus_call("AddMatch", "s", [signal_match(member)]))
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    print("subscribed", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"sync":
            await bus.call(bus_call("GetId"))
            print("synced", flush=True)
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
