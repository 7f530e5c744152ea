"""A TCP listener run inside a DelayedPeer's namespace (see delay_relay.py).

    python3 ns_listener.py MODE HOST PORT PARENT_PID

Modes: keep (hold each connection until the peer closes it, discarding what it sends), close
(close at once after accept: FIN), rst (close with SO_LINGER 0 after accept: RST). PORT 0 lets
the kernel pick. Prints "ready <port>" once listening.
"""
import ctypes
import os
import selectors
import signal
import socket
import struct
import sys

PR_SET_PDEATHSIG = 1

mode, host, port, parent = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# Dies with the test even when the test is killed before its cleanup runs.
ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
if os.getppid() != parent:
    sys.exit("parent gone before the listener started")

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
# Room for a burst of connects that all arrive within one delay.
s.listen(1024)
print("ready", s.getsockname()[1], flush=True)
sel = selectors.DefaultSelector()
sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is s:
            conn, _ = s.accept()
            if mode == "keep":
                sel.register(conn, selectors.EVENT_READ)
                continue
            if mode == "rst":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            continue
        try:
            data = key.fileobj.recv(65536)
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            key.fileobj.close()
