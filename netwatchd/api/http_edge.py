"""The HTTP edge: one aiohttp listener per setting (metrics, ebpf_server_api, web), with what every
listener on a hostile LAN needs around the handlers it serves.

aiohttp (Debian's python3-aiohttp) parses and frames requests and writes answers: keep-alive,
chunked bodies, HEAD, streamed answers. Around it, each listener keeps the rules it has always had
(README.md, "Metrics and the JSON API"; the pure checks are netwatchd.api.http_guard's):
- a request head of at most MAX_HEAD_BYTES (431); head and body received within READ_TIMEOUT_SEC
  of the connection's start, or of the first byte of a later request on a kept-alive connection
  (408); a body of at most `max_body` bytes (413), with one Content-Length or, where the listener
  takes them, chunked (elsewhere 411); a listener without bodies (max_body None) leaves a body
  unread and closes the connection after answering;
- HTTP/1.0 or 1.1 (505), a path as target, an ASCII head, a UTF-8 query (400);
- the Host check against the listener's allowed_hosts, read at each request since a reload
  changes them (403, DNS rebinding);
- at most MAX_CONNECTIONS live connections, the oldest one still sending its request closed to
  admit a new one (RUNNING, netwatchd_http_connections_dropped_total). A kept-alive connection
  waiting for its next request counts as sending; one being answered, however long its answer
  streams, does not, and is closed for room only when no connection is sending;
- every refusal in the listener's own shape, `error(status, message)`: aiohttp's own error pages
  never reach a client (a head aiohttp's parser refuses is named by our checks, run on the head as
  it came; what only aiohttp objects to is a 400 "malformed request: <its reason>").
A connection stays open after its answer only when the client asks for it (`Connection:
keep-alive`, as browsers send it); otherwise it is closed after one answer, as these listeners
always did and as scripts that read an answer to the end of the connection expect.

How a listener uses it (the web UI, say):

    edge = HttpEdge("web", cfg.web.listen, lambda: model.cfg.web.allowed_hosts, error, app=app)
    await edge.start()   # ListenError "web.listen: cannot listen on ADDRESS: REASON"
    ...
    await edge.stop()

`error(status, message)` answers (status, content type, body[, headers]) for a refusal. `app`
is an aiohttp.web.Application: its handlers answer aiohttp responses (a web.StreamResponse
streamed for minutes too); its on_startup / on_shutdown / on_cleanup run in start() and stop().
Its request body is read (within the limits) before a handler runs: request.read(), .text() and
.json() answer at once. Or `route(method, path, query, body)` answers such tuples, as the metrics
and ebpf-server listeners do (netwatchd.api.http).
"""
from __future__ import annotations

import asyncio
import logging
import os
from email.utils import formatdate
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from aiohttp import HttpVersion10, HttpVersion11, hdrs, web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from multidict import CIMultiDict

from netwatchd.api.http_guard import (MAX_CONNECTIONS, BadRequest, ConnectionCap, check_host, content_length,
                                      header_fields, parse_head, parse_headers, parse_target)
from netwatchd.config import split_listen

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
MAX_BODY_BYTES = 8192
READ_TIMEOUT_SEC = 10.0
# The kernel's accept queue, and how many connections asyncio accepts per loop turn. Small, so
# that under a connection flood a new connection is admitted (http_guard.ConnectionCap) within a
# turn or two of its accept, and MAX_CONNECTIONS / LISTEN_BACKLOG (8) turns pass before it is the
# oldest still sending: an honest request's head is read in 3-4. (Measured with a client that
# reopens each closed connection at once, 3000-8000/s here: with asyncio's default of 100 and a
# cap of 128, GET /health was closed unanswered 3 times in 10; with 32, 0 in 40 (caps 128 and
# 256), the daemon's descriptors peaking at ~400 with 256.)
LISTEN_BACKLOG = 32
# How long a kept-alive connection may wait for its next request before it is closed (silently:
# no request, no answer). Clients reuse a connection within seconds or not at all; a flood of
# waiting ones is bounded by the cap anyway, where they count as still sending.
KEEPALIVE_SEC = 60.0
# Header lines per request. Within MAX_HEAD_BYTES a head has at most ~2000; this is aiohttp's
# default, which bounds the one head we do not count byte by byte (a pipelined request, below).
MAX_HEADER_LINES = 128
# How long stop() waits for answers under way (a streamed one is ended by the app's on_shutdown).
SHUTDOWN_SEC = 1.0
SERVER = "netwatchd"  # not aiohttp's default, which names Python's and aiohttp's versions
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 411: "Length Required", 413: "Request Entity Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 505: "HTTP Version Not Supported"}
INTERNAL_ERROR = "internal error; see the daemon's log"
# The cap of each running listener, by its setting (metrics, ebpf_server_api, web): /metrics
# exports every one's dropped count. A listener started again (in tests) replaces its entry.
RUNNING: Dict[str, ConnectionCap] = {}

Answer = Tuple[Any, ...]  # (status, content type, body[, headers: ((name, value), ...)])
Route = Callable[[str, str, Dict[str, List[str]], bytes], Answer]
_ASKED = "netwatchd.asked"  # a route listener's (path, query, body) on its aiohttp request


class ListenError(Exception):
    """The configured address cannot be listened on; the message names it."""


class HttpEdge:
    """One listener: `setting` names it (in messages, RUNNING and `<setting>.allowed_hosts`),
    `listen` is its address, `allowed_hosts()` its allowed_hosts as the running config has them.
    Exactly one of `route` and `app` answers (module docstring)."""

    def __init__(self, setting: str, listen: str, allowed_hosts: Callable[[], Iterable[str]],
                 error: Callable[[int, str], Answer], *, route: Optional[Route] = None,
                 app: Optional[web.Application] = None, max_body: Optional[int] = MAX_BODY_BYTES,
                 chunked: bool = False, read_timeout: float = READ_TIMEOUT_SEC, max_connections: int = MAX_CONNECTIONS):
        if (route is None) == (app is None):
            raise ValueError("an HTTP listener answers with a route or an app, one of them")
        self.setting = setting
        self.listen = listen
        self.allowed_hosts = allowed_hosts
        self.error = error
        self.route = route
        self.app = app
        self.max_body = max_body
        self.chunked = chunked
        self.read_timeout = read_timeout
        self.connections = ConnectionCap(max_connections)
        self._server: Optional[asyncio.AbstractServer] = None
        self._web: Optional[web.Server] = None
        self._runner: Optional[web.AppRunner] = None

    async def start(self) -> None:
        host, port = split_listen(self.listen)
        loop = asyncio.get_running_loop()
        if self.app is not None:
            if _name_server not in self.app.on_response_prepare:
                self.app.on_response_prepare.append(_name_server)  # before the runner freezes the app
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()  # the app's on_startup
            self._web = self._runner.server
        else:
            self._web = web.Server(self._answer_route)
        try:
            self._server = await loop.create_server(lambda: _Connection(self, self._web, loop), host, port,
                                                    reuse_address=True, backlog=LISTEN_BACKLOG)
        except OSError as e:
            await self._cleanup()
            raise ListenError(f"{self.setting}.listen: cannot listen on {self.listen}: "
                              f"{os.strerror(e.errno) if e.errno else e}") from None
        RUNNING[self.setting] = self.connections
        log.info("HTTP %s on http://%s/", self.setting, self.listen)

    async def stop(self) -> None:
        if RUNNING.get(self.setting) is self.connections:
            del RUNNING[self.setting]
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.shutdown()  # the app's on_shutdown: it ends its streams
        if self._web is not None:
            await self._web.shutdown(SHUTDOWN_SEC)
            self._web = None
            await asyncio.sleep(0)  # the closed connections' sockets are released on the next loop turn
        if self._runner is not None:
            await self._runner.cleanup()  # the app's on_cleanup
            self._runner = None

    # -- answers -----------------------------------------------------------------------------------

    def response(self, answer: Answer) -> web.Response:
        """The aiohttp response for a (status, content type, body[, headers]) answer."""
        status, ctype, body, *rest = answer
        headers = _headers(status, ctype, rest[0] if rest else None)
        return web.Response(status=status, reason=REASONS.get(status), body=body, headers=headers)

    def refusal(self, status: int, message: str) -> web.Response:
        """A refused request: the listener's error body, and the connection closes after it."""
        response = self.response(self.error(status, message))
        response.force_close()
        return response

    def raw_refusal(self, status: int, message: str) -> bytes:
        """The same as bytes, for a refusal before aiohttp has a request (head too long or too slow)."""
        status, ctype, body, *rest = self.error(status, message)
        head = [f"HTTP/1.1 {status} {REASONS.get(status, '')}"]
        head += [f"{name}: {value}" for name, value in _headers(status, ctype, rest[0] if rest else None).items()]
        head += [f"Content-Length: {len(body)}", f"Date: {formatdate(usegmt=True)}", "Connection: close"]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    async def _answer_route(self, request: web.BaseRequest) -> web.Response:
        path, query, body = request[_ASKED]
        return self.response(self.route(request.method, path, query, body))

    def diagnose(self, head: bytes, exc: HttpProcessingError) -> Tuple[int, str]:
        """(status, message) for a request aiohttp's parser refused: our checks, in their order, on
        the head as it came (the parts of it that did), so a refusal reads as it always has."""
        if isinstance(exc, LineTooLong):  # a line over MAX_HEAD_BYTES: the head is longer still
            return 431, f"request head over {MAX_HEAD_BYTES} bytes"
        if head:
            try:
                parse_head(head)
                fields = parse_headers(head)
                check_host(fields, self.allowed_hosts(), f"{self.setting}.allowed_hosts")
                if not (self.chunked and "transfer-encoding" in fields):
                    content_length(fields, self.max_body or MAX_BODY_BYTES)
            except BadRequest as e:
                return e.status, str(e)
        return 400, f"malformed request: {exc.message}"[:300]


def _headers(status: int, ctype: str, headers: Optional[Sequence[Tuple[str, str]]]) -> Dict[str, str]:
    if headers is None and status == 405:  # our routes are read-only
        headers = (("Allow", "GET"),)
    return {hdrs.CONTENT_TYPE: ctype, hdrs.SERVER: SERVER, **dict(headers or ())}


async def _name_server(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = SERVER


def _keeps_alive(headers) -> bool:
    """Whether the client asked to keep the connection (module docstring: only then is it kept)."""
    tokens = {token.strip().lower() for value in headers.getall(hdrs.CONNECTION, ()) for token in value.split(",")}
    return "keep-alive" in tokens and "close" not in tokens


class _Connection(web_protocol.RequestHandler):
    """One connection: aiohttp's protocol, plus its place in the cap, the head counted byte by
    byte until it is whole (MAX_HEAD_BYTES), the read deadline, and our answers for refusals."""

    def __init__(self, edge: HttpEdge, server: web.Server, loop: asyncio.AbstractEventLoop):
        # lingering_time 0: a body left unread is not read on; the connection closes
        super().__init__(server, loop=loop, keepalive_timeout=KEEPALIVE_SEC, access_log=None,
                         max_line_size=MAX_HEAD_BYTES, max_field_size=MAX_HEAD_BYTES,
                         max_headers=MAX_HEADER_LINES, lingering_time=0.0)
        self._edge = edge
        self._inner = self._request_handler  # the app's (or _answer_route)
        self._request_handler = self._guarded
        self._aiohttp_request = self._request_factory
        self._request_factory = self._request
        self._key: Optional[int] = None
        self._head = bytearray()  # the current request's head as it came, while it arrives
        self._counting = False  # the head is still arriving
        self._deadline = 0.0  # the current request's, loop time
        self._timer: Optional[asyncio.TimerHandle] = None
        self._version = HttpVersion11  # what the current request said
        self._close_after = False  # refused, or a body left unread: close after the answer

    # -- the connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # admitted as the transport is made, not a loop turn later: accepted sockets wait less
        self._key = self._edge.connections.admit(transport.abort)
        self._expect_head(start_clock=True)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._key is not None:
            self._edge.connections.release(self._key)
        self._stop_clock()
        super().connection_lost(exc)

    def _expect_head(self, start_clock: bool) -> None:
        """A request head comes next: the first one's clock runs from the connection's start, a later
        one's from its first byte (a kept-alive connection may wait KEEPALIVE_SEC for it)."""
        self._head = bytearray()
        self._counting = True
        if start_clock:
            self._start_clock()

    def _start_clock(self) -> None:
        self._deadline = self._loop.time() + self._edge.read_timeout
        self._timer = self._loop.call_at(self._deadline, self._timed_out)

    def _stop_clock(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._counting:  # past the head, the body's read is timed by _guarded
            self._refuse_raw(408, f"request not received within {self._edge.read_timeout:g} s")

    def _refuse_raw(self, status: int, message: str) -> None:
        self._counting = False
        self._stop_clock()
        if self._key is not None:
            self._edge.connections.received(self._key)  # the request is over: it is being answered
        if self.transport is not None:
            self.transport.write(self._edge.raw_refusal(status, message))
        self.force_close()  # after what was written is sent

    def data_received(self, data: bytes) -> None:
        if self._counting and not self._force_close:
            if not self._head and self._timer is None:
                self._start_clock()  # a kept-alive connection's next request begins
            seen = len(self._head)
            self._head += data
            end = self._head.find(b"\r\n\r\n", max(0, seen - 3))
            if (end < 0 and len(self._head) > MAX_HEAD_BYTES) or end + 4 > MAX_HEAD_BYTES:
                self._refuse_raw(431, f"request head over {MAX_HEAD_BYTES} bytes")
                return
            if end >= 0:  # whole: the body (if any) is timed by _guarded, to the same deadline
                del self._head[end + 4:]
                self._counting = False
                self._stop_clock()
        super().data_received(data)
        if self._messages and isinstance(self._messages[-1][0], web_protocol._ErrInfo):
            # aiohttp's parser refused the request: answered by handle_error, nothing more is read
            self._counting = False
            self._stop_clock()
            if self.transport is not None:
                self.transport.pause_reading()

    # -- a request -------------------------------------------------------------------------------------

    def _request(self, message, payload, protocol, writer, task) -> web.BaseRequest:
        """aiohttp's request, but for the connection's fate: kept only when the client asks (the
        module docstring), and answered as HTTP/1.1 when the request's version is not one we
        speak (505) or there is none (aiohttp's stand-in for a request it refused says 1.0)."""
        self._version = message.version
        if message is web_protocol.ERROR or message.version not in (HttpVersion10, HttpVersion11):
            message = message._replace(version=HttpVersion11, should_close=True)
        elif not message.should_close and not _keeps_alive(message.headers):
            message = message._replace(should_close=True)
        return self._aiohttp_request(message, payload, protocol, writer, task)

    async def _guarded(self, request: web.BaseRequest) -> web.StreamResponse:
        """Our checks, then the whole body within the deadline, then the listener's answer."""
        edge = self._edge
        self._head = bytearray()  # aiohttp parsed it: what a refusal of a pipelined request is not named by
        try:  # parse_head's checks, in its order, on what aiohttp parsed
            fields = header_fields(request.raw_headers)
            if not request.raw_path.isascii():
                raise BadRequest(400, "request head is not ASCII")
            if self._version not in (HttpVersion10, HttpVersion11):
                if self._version.major == 0:  # llhttp reads a request line without a version as HTTP/0.9
                    raise BadRequest(400, "malformed request line")
                raise BadRequest(505, f"unsupported protocol 'HTTP/{self._version.major}.{self._version.minor}'")
            path, query = parse_target(request.raw_path)
            check_host(fields, edge.allowed_hosts(), f"{edge.setting}.allowed_hosts")
            request, body = await self._body(request, fields)
        except BadRequest as e:
            self._close_after = True
            self._received()  # an error answer too: the request is over
            return edge.refusal(e.status, str(e))
        self._received()
        if edge.route is not None:
            request[_ASKED] = (path, query, body)
        response = await self._inner(request)
        if self._close_after:  # a body left unread: say so (a streamed answer has said otherwise already)
            response.force_close()
        return response

    async def _body(self, request: web.BaseRequest, fields: Dict[str, List[str]]) -> Tuple[web.BaseRequest, bytes]:
        """(request, its body), the body bounded and read by the request's deadline; a request
        whose body is left unread (a listener without bodies) closes the connection."""
        edge = self._edge
        if edge.max_body is None:
            self._close_after = request.body_exists
            return request, b""
        if not (edge.chunked and "transfer-encoding" in fields):  # aiohttp took only chunked as the last coding
            if not content_length(fields, edge.max_body):  # 411 for chunked here, 413, 400
                return request, b""
        if any(value.lower() == "100-continue" for value in fields.get("expect", ())):
            if edge.app is not None:  # or the app's router would say it again once the body is in
                request = request.clone(headers=CIMultiDict((k, v) for k, v in request.headers.items()
                                                            if k.lower() != "expect"))
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = await asyncio.wait_for(_read(request, edge.max_body), max(0.0, self._deadline - self._loop.time()))
        except asyncio.TimeoutError:
            raise BadRequest(408, f"request not received within {edge.read_timeout:g} s") from None
        except web_protocol.RequestPayloadError:
            raise BadRequest(400, "malformed chunked body") from None
        request._read_bytes = body  # what request.read() / .json() answer: the body is in
        return request, body

    def _received(self) -> None:
        self._stop_clock()
        if self._key is not None:
            self._edge.connections.received(self._key)

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float) -> bool:
        reset = await super().finish_response(request, resp, start_time)
        if self._close_after:
            self.force_close()  # the answer is written; what the client sends on is not read
        elif resp.keep_alive and not reset and not self._messages and self._key is not None:
            self._edge.connections.waiting(self._key)
            self._expect_head(start_clock=False)
        return reset

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: Optional[BaseException] = None,
                     message: Optional[str] = None) -> web.StreamResponse:
        """aiohttp's answer to a request its parser refused (status 400) or whose handler raised:
        ours instead, in the listener's shape (aiohttp's would be a text page, its stack in our log)."""
        edge = self._edge
        if request.writer.output_size > 0:  # a streamed answer failed midway: all we can do is close
            log.error("HTTP %s answer failed", edge.setting, exc_info=exc)
            raise ConnectionError("the answer was under way")
        if isinstance(exc, HttpProcessingError):
            status, text = edge.diagnose(bytes(self._head), exc)
        else:
            if not isinstance(exc, ConnectionError):  # the client went away: nothing to report
                log.error("HTTP %s request failed", edge.setting, exc_info=exc)
            status, text = 500, INTERNAL_ERROR
        self._close_after = True
        self._received()
        return edge.refusal(status, text)


async def _read(request: web.BaseRequest, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > max_bytes:  # only a chunked body gets here: a Content-Length was checked
            raise BadRequest(413, f"request body over {max_bytes} bytes")
    return bytes(body)
