"""The hand-written asyncio HTTP/1.1 server netwatchd had before the HTTP edge moved onto aiohttp
(netwatchd/api/http_edge.py), kept here only so bench/ebpf_api_bench.py can time both side by
side, on one daemon, over the same read model and routes.

Run as what starts netwatchd (DaemonProcess's command_prefix):

    python bench/legacy_http.py --legacy-port PORT /path/to/netwatchd --config FILE

It runs netwatchd in this process with ebpf-server's listener served twice: by the HTTP edge on
ebpf_server_api.listen as always, and by this server on 127.0.0.1:PORT, both answering through
the same route (netwatchd.api.http.ebpf_server_listener's). The server below is the old one
unchanged but for its names: one request per connection, head at most 8 KiB, a Content-Length
body at most 8 KiB, all within 10 s, the Host check and the connection cap.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from netwatchd.api.http_guard import (MAX_CONNECTIONS, BadRequest, ConnectionCap, check_host,  # noqa: E402
                                      content_length, parse_head, parse_headers)

log = logging.getLogger("netwatchd.bench.legacy_http")

MAX_HEAD_BYTES = 8192
MAX_BODY_BYTES = 8192
READ_TIMEOUT_SEC = 10.0
LISTEN_BACKLOG = 32
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 411: "Length Required", 413: "Request Entity Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 505: "HTTP Version Not Supported"}


class LegacyServer:
    """The old netwatchd.api.http.HttpApi's server part over a `route` and `error` (its answers)."""

    def __init__(self, host: str, port: int, route, error, allowed_hosts, setting: str, reads_body: bool = True):
        self.host, self.port = host, port
        self.route, self.error, self.allowed_hosts, self.setting = route, error, allowed_hosts, setting
        self.reads_body = reads_body
        self.connections = ConnectionCap(MAX_CONNECTIONS)
        self.server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._connected, self.host, self.port, reuse_address=True,
                                                 backlog=LISTEN_BACKLOG, limit=MAX_HEAD_BYTES)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        return self._serve(reader, writer, self.connections.admit(writer.transport.abort))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: int) -> None:
        method = ""
        try:
            deadline = asyncio.get_running_loop().time() + READ_TIMEOUT_SEC
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SEC)
                if len(head) > MAX_HEAD_BYTES:
                    raise BadRequest(431, f"request head over {MAX_HEAD_BYTES} bytes")
                method, path, query = parse_head(head)
                fields = parse_headers(head)
                check_host(fields, self.allowed_hosts(), f"{self.setting}.allowed_hosts")
                body = await self._read_body(reader, writer, fields, deadline) if self.reads_body else b""
                answer = self.route(method, path, query, body)
            except asyncio.LimitOverrunError:
                answer = self.error(431, f"request head over {MAX_HEAD_BYTES} bytes")
            except asyncio.TimeoutError:
                answer = self.error(408, f"request not received within {READ_TIMEOUT_SEC:g} s")
            except asyncio.IncompleteReadError:
                return  # the client went away
            except BadRequest as e:
                answer = self.error(e.status, str(e))
            except Exception:
                log.exception("HTTP %s request failed", self.setting)
                answer = self.error(500, "internal error; see the daemon's log")
            self.connections.received(key)  # an error answer too: the request is over
            status, ctype, body, *headers = answer
            writer.write(_response(status, ctype, body, headers[0] if headers else None, head_only=method == "HEAD"))
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT_SEC)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self.connections.release(key)
            writer.close()

    async def _read_body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         fields: Dict[str, List[str]], deadline: float) -> bytes:
        length = content_length(fields, MAX_BODY_BYTES)
        if not length:
            return b""
        if any(value.lower() == "100-continue" for value in fields.get("expect", ())):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        return await asyncio.wait_for(reader.readexactly(length), remaining)


def _response(status: int, ctype: str, body: bytes, headers=None, head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    if headers is None and status == 405:
        headers = (("Allow", "GET"),)
    for name, value in headers or ():
        head += f"{name}: {value}\r\n"
    return (head + "\r\n").encode() + (b"" if head_only else body)


class _Both:
    """What netwatchd's daemon starts as ebpf-server's listener: the real one and the legacy one."""

    def __init__(self, listener, legacy: LegacyServer):
        self.listener, self.legacy = listener, legacy

    async def start(self) -> None:
        await self.listener.start()
        await self.legacy.start()

    async def stop(self) -> None:
        await self.legacy.stop()
        await self.listener.stop()


def main(argv: List[str]) -> int:
    if len(argv) < 3 or argv[0] != "--legacy-port":
        print("usage: legacy_http.py --legacy-port PORT NETWATCHD [ARGS...]", file=sys.stderr)
        return 2
    port, netwatchd_args = int(argv[1]), argv[3:]
    from netwatchd import daemon
    from netwatchd.api import http

    real = http.ebpf_server_listener

    def both(model):
        listener = real(model)
        legacy = LegacyServer("127.0.0.1", port, listener.route, listener.error, listener.allowed_hosts,
                              listener.setting)
        return _Both(listener, legacy)

    http.ebpf_server_listener = both  # the daemon imports it when it starts the listener
    return daemon.main(netwatchd_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
