"""A full bus socket means "wait", not "the bus is gone".

dbus-fast's asyncio writer sends on a non-blocking socket and treats every exception as the end
of the connection, EAGAIN included (inherited from python-dbus-next, altdesktop/python-dbus-next
issue 153). A burst of signals — 3000 PatternSeen during a port scan — while dbus-daemon is slow to
read (a loaded two-core host) fills the socket's buffer: the next send raises BlockingIOError, the
library closes the connection, and netwatchd silently drops off the bus (name gone, every method
call answered "not provided by any .service files").

The writer already knows how to wait: a send that wrote less than the whole message leaves the
rest for when the socket is writable. So the socket the writer sends on is wrapped, and a send
that would block reports 0 bytes written; the writer then waits for writability like after any
partial write. Messages queue in the writer meanwhile, in order, none lost.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class FullSocketWaits:
    """The bus socket, except that send() on a full buffer returns 0 instead of raising."""

    def __init__(self, sock) -> None:
        self._sock = sock

    def send(self, data, *flags) -> int:
        try:
            return self._sock.send(data, *flags)
        except BlockingIOError:
            return 0

    def __getattr__(self, name):
        # everything else (sendmsg with fds, which netwatchd never sends, fileno, close) as is
        return getattr(self._sock, name)


def tolerate_full_socket(bus) -> bool:
    """Wraps the connected bus's writer socket. False when it is wrapped already, or (with a debug
    line) on a dbus-fast whose writer is shaped differently, which then keeps its own behaviour."""
    writer = getattr(bus, "_writer", None)
    sock = getattr(writer, "sock", None)
    if isinstance(sock, FullSocketWaits):
        return False
    if sock is None or not hasattr(sock, "send"):
        log.debug("dbus-fast writer not wrapped (no writer.sock in this version)")
        return False
    writer.sock = FullSocketWaits(sock)
    return True
