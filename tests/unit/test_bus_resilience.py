"""The bus edge's two safety nets, without a bus: a full socket reports "0 bytes written" instead
of ending the connection (bus_backpressure), and a lost bus is taken back with backoff, said once
(bus_reconnect). The real thing, against dbus-daemon, is in tests/integration/test_alert_bus.py
(a stalled bus daemon) and test_daemon_lifecycle.py (a restarted one)."""
from __future__ import annotations

import asyncio
import logging
import socket
from types import SimpleNamespace

import pytest

from netwatchd.api import bus_reconnect
from netwatchd.api.bus_backpressure import FullSocketWaits, tolerate_full_socket


def test_a_full_socket_writes_nothing_instead_of_raising():
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        wrapped = FullSocketWaits(a)
        chunk = b"x" * 65536
        written = 0
        while (n := wrapped.send(chunk)) > 0:  # until the buffer is full: then 0, no exception
            written += n
        assert n == 0 and written > 0
        with pytest.raises(BlockingIOError):  # the bare socket would have raised
            a.send(chunk)
        assert wrapped.fileno() == a.fileno()  # the rest is the socket's own
        b.setblocking(False)
        assert len(b.recv(written + 1)) > 0  # what was written is there to read
    finally:
        a.close()
        b.close()


def test_only_a_writer_with_a_socket_is_wrapped_and_only_once():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bus = SimpleNamespace(_writer=SimpleNamespace(sock=sock))
        assert tolerate_full_socket(bus) is True
        assert isinstance(bus._writer.sock, FullSocketWaits)
        assert tolerate_full_socket(bus) is False  # not wrapped twice
        assert tolerate_full_socket(SimpleNamespace()) is False  # another dbus-fast shape: left alone
    finally:
        sock.close()


class FakeBus:
    def __init__(self, name: str, ends_with=None):
        self.name = name
        self.ended = asyncio.get_running_loop().create_future()
        self.ends_with = ends_with

    async def wait_for_disconnect(self):
        return await self.ended

    def end(self):
        if self.ends_with is None:
            self.ended.set_result(None)
        else:
            self.ended.set_exception(self.ends_with)


async def stay_on_bus_through(first: FakeBus, connect_results):
    """Runs stay_on_bus until the new bus is served; returns (served, handed over, connects)."""
    served, handed, attempts = [], [], []

    async def connect():
        attempts.append(1)
        result = connect_results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    task = asyncio.create_task(bus_reconnect.stay_on_bus(first, connect, served.append, handed.append))
    await asyncio.sleep(0)
    first.end()
    for _ in range(200):
        if handed:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return served, handed, len(attempts)


def test_a_lost_bus_is_retried_with_backoff_and_said_once(caplog, monkeypatch):
    monkeypatch.setattr(bus_reconnect, "FIRST_RETRY_SEC", 0.01)
    caplog.set_level(logging.INFO, logger=bus_reconnect.__name__)

    async def scenario():
        first = FakeBus("old", ends_with=BrokenPipeError(32, "Broken pipe"))
        new = FakeBus("new")
        return await stay_on_bus_through(first, [ConnectionRefusedError(111, "refused")] * 3 + [new]), new

    (served, handed, attempts), new = asyncio.run(scenario())
    assert served == [new] and handed == [new] and attempts == 4
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == ("lost the system bus (BrokenPipeError: [Errno 32] Broken pipe): "
                           "org.netwatchd.Netwatchd1 answers nobody until it is back; reconnecting")
    assert sum("not back yet" in m for m in messages) == 1  # three failures, one line
    assert messages[-1] == "back on the system bus as org.netwatchd.Netwatchd1"


def test_a_bus_that_closed_cleanly_is_taken_back_too(caplog):
    caplog.set_level(logging.INFO, logger=bus_reconnect.__name__)

    async def scenario():
        new = FakeBus("new")
        return await stay_on_bus_through(FakeBus("old"), [new]), new

    (served, handed, attempts), new = asyncio.run(scenario())
    assert served == [new] and handed == [new] and attempts == 1
    assert "lost the system bus (the bus closed the connection)" in caplog.records[0].getMessage()
