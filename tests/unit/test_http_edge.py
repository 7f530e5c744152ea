"""The HTTP edge (netwatchd/api/http_edge.py) on a loopback port, in process, over raw sockets:
every refusal in the listener's own shape with its status line, keep-alive only when asked for,
HEAD, a chunked body where the listener takes one, an aiohttp application's routes with a
streamed answer that outlives the read timeout and the connection cap, and the cap counting a
kept-alive connection waiting for its next request as still sending. Expected bytes are written
out here; the daemon-level conformance is in tests/integration/ (test_http_hardening.py,
test_ebpf_server_api.py)."""
from __future__ import annotations

import asyncio
import json
import logging
import socket
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from netwatchd.api import ebpf_server
from netwatchd.api.http import HttpApi, ListenError
from netwatchd.api.http_edge import RUNNING, HttpEdge
from tests.support.alertmanager import free_port
from tests.unit.test_metrics import FakeDaemon



def echo(method, path, query, body):
    return 200, "application/json", json.dumps({"method": method, "path": path, "query": query,
                                                "body": body.decode()}).encode()


@asynccontextmanager
async def listening(**keys):
    keys.setdefault("route", None if "app" in keys else echo)
    keys.setdefault("error", ebpf_server.error_response)
    allowed = keys.pop("allowed", [])
    edge = HttpEdge(keys.pop("setting", "ebpf_server_api"), f"127.0.0.1:{free_port()}", lambda: allowed, **keys)
    await edge.start()
    try:
        yield edge
    finally:
        await edge.stop()


def port_of(edge: HttpEdge) -> int:
    return int(edge.listen.rpartition(":")[2])


async def exchange(edge, data: bytes, timeout: float = 5.0) -> bytes:
    """What the listener answers until it closes (b"<open>" appended if it has not within `timeout`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(edge))
    writer.write(data)
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            chunks.append(chunk)
    except asyncio.TimeoutError:
        chunks.append(b"<open>")
    except ConnectionResetError:
        pass
    writer.close()
    return b"".join(chunks)


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One answer with a Content-Length off a connection that stays open."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head + await reader.readexactly(int(parts(head)[1]["content-length"]))


def parts(answer: bytes):
    """(status line, {header: value}, body) of one answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return lines[0], {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}, body


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("request_bytes, status, message", [
    (b"GET /health HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", "431 Request Header Fields Too Large",
     "request head over 8192 bytes"),
    (b"GET /health HTTP/1.1\r\n" + b"X-Short: 0123456789\r\n" * 500 + b"\r\n", "431 Request Header Fields Too Large",
     "request head over 8192 bytes"),  # no line is long: the whole head is
    (b"POST /api/list-connections HTTP/1.1\r\nContent-Length: 8193\r\n\r\n", "413 Request Entity Too Large",
     "request body over 8192 bytes"),
    (b"POST /api/list-connections HTTP/1.1\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\n",
     "413 Request Entity Too Large", "request body over 8192 bytes"),
    (b"POST /api/list-connections HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
     "411 Length Required", "send the body with a Content-Length (chunked bodies are not accepted)"),
    (b"POST /api/list-connections HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
     "400 Bad Request", "Content-Length given 2 times; send it once"),
    (b"POST /api/list-connections HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n{}",
     "400 Bad Request", "malformed Content-Length '2, 2'"),
    (b"GET /health\r\n\r\n", "400 Bad Request", "malformed request line"),
    (b"GET /health HTTP/2.0\r\n\r\n", "505 HTTP Version Not Supported", "unsupported protocol 'HTTP/2.0'"),
    (b"GET http://x/health HTTP/1.1\r\n\r\n", "400 Bad Request", "request target must be a path"),
    (b"GET /\xff HTTP/1.1\r\n\r\n", "400 Bad Request", "request head is not ASCII"),
    (b"GET /health?pid=%ff HTTP/1.1\r\n\r\n", "400 Bad Request", "query string is not UTF-8"),
    (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", "400 Bad Request", "malformed header line"),
    (b"GET /health HTTP/1.1\r\nHost: localhost\r\nHost: rebind.example\r\n\r\n", "400 Bad Request",
     "Host given 2 times; send it once"),
    (b"GET /health HTTP/1.1\r\nHost: rebind.example:8080\r\n\r\n", "403 Forbidden",
     "Host 'rebind.example:8080' is not allowed here: use an IP address or localhost in the URL, or add the name "
     "to ebpf_server_api.allowed_hosts"),
])
def test_refusals_in_the_listeners_shape_and_the_connection_closes(request_bytes, status, message):
    async def scenario():
        async with listening() as edge:
            return await exchange(edge, request_bytes)
    line, headers, body = parts(run(scenario()))
    assert line == f"HTTP/1.1 {status}"
    assert (headers["content-type"], headers["connection"]) == ("application/json", "close")
    assert body == b'{"error":"%s","message":%s}\n' % (status.split(" ", 1)[1].encode(), json.dumps(message).encode())


def test_a_head_or_a_body_too_slow_is_408():
    async def scenario():
        async with listening(read_timeout=0.3) as edge:
            return (await exchange(edge, b"GET /health HTTP/1.1\r\n"),
                    await exchange(edge, b"POST /api/x HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}"))
    for answer in run(scenario()):
        assert parts(answer)[0] == "HTTP/1.1 408 Request Timeout"
        assert parts(answer)[2] == b'{"error":"Request Timeout","message":"request not received within 0.3 s"}\n'


def test_keep_alive_only_when_asked_and_each_request_timed_from_its_first_byte():
    async def scenario():
        async with listening(read_timeout=0.5) as edge:
            closed = await exchange(edge, b"GET /a HTTP/1.1\r\n\r\n")
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(edge))
            answers = []
            for path in ("/a", "/b", "/c"):
                writer.write(b"GET %s HTTP/1.1\r\nConnection: keep-alive\r\n\r\n" % path.encode())
                answers.append(await read_answer(reader))
                await asyncio.sleep(0.7)  # kept, idle longer than the read timeout: no 408
            writer.write(b"GET /d HTTP/1.1\r\nConnection: keep-alive\r\n\r")  # ... but a request must come whole
            late = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return closed, answers, late
    closed, answers, late = run(scenario())
    assert parts(closed)[1]["connection"] == "close"
    assert [json.loads(parts(a)[2])["path"] for a in answers] == ["/a", "/b", "/c"]
    assert all("connection" not in parts(a)[1] for a in answers)
    assert parts(late)[0] == "HTTP/1.1 408 Request Timeout"


def test_head_answers_the_get_headers_only():
    async def scenario():
        async with listening() as edge:
            return await exchange(edge, b"HEAD /x HTTP/1.1\r\n\r\n"), await exchange(edge, b"GET /x HTTP/1.1\r\n\r\n")
    head, get = run(scenario())
    assert parts(head)[2] == b"" and int(parts(head)[1]["content-length"]) == len(parts(get)[2].replace(b"GET", b"HEAD"))


def test_a_chunked_body_where_the_listener_takes_one_bounded_as_any():
    async def scenario():
        async with listening(chunked=True, max_body=10) as edge:
            return (await exchange(edge, b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n3\r\nabc\r\n0\r\n\r\n"),
                    await exchange(edge, b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{}{}{}\r\n6\r\n{}{}{}\r\n0\r\n\r\n"))
    ok, big = run(scenario())
    assert json.loads(parts(ok)[2])["body"] == "{}abc"
    assert parts(big)[0] == "HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(parts(big)[2])["message"] == "request body over 10 bytes"


def test_expect_100_continue():
    async def scenario():
        async with listening() as edge:
            return await exchange(edge, b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}")
    assert run(scenario()).startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")


def test_allowed_hosts_are_read_at_each_request():
    async def scenario():
        names = []
        async with listening(allowed=names) as edge:
            before = await exchange(edge, b"GET / HTTP/1.1\r\nHost: nas.lan\r\n\r\n")
            names.append("nas.lan")
            return before, await exchange(edge, b"GET / HTTP/1.1\r\nHost: nas.lan\r\n\r\n")
    before, after = run(scenario())
    assert (parts(before)[0], parts(after)[0]) == ("HTTP/1.1 403 Forbidden", "HTTP/1.1 200 OK")


def test_a_failing_route_is_500_in_the_listeners_shape_and_logged(caplog):
    def broken(method, path, query, body):
        raise RuntimeError("boom")

    async def scenario():
        async with listening(route=broken) as edge:
            return await exchange(edge, b"GET / HTTP/1.1\r\n\r\n")
    with caplog.at_level(logging.ERROR):
        answer = run(scenario())
    assert parts(answer)[0] == "HTTP/1.1 500 Internal Server Error"
    assert json.loads(parts(answer)[2]) == {"error": "Internal Server Error", "message": "internal error; see the daemon's log"}
    assert "HTTP ebpf_server_api request failed" in caplog.text


def test_the_metrics_listener_leaves_a_body_unread_and_closes():
    async def scenario():
        api = HttpApi(FakeDaemon(), type("Cfg", (), {"listen": f"127.0.0.1:{free_port()}"})())
        await api.start()
        try:
            assert RUNNING["metrics"] is api.connections
            return await exchange(api.edge, b"POST /health HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc")
        finally:
            await api.stop()
    line, headers, body = parts(run(scenario()))
    assert (line, headers["allow"], headers["connection"]) == ("HTTP/1.1 405 Method Not Allowed", "GET", "close")
    assert json.loads(body) == {"error": "method POST not allowed: this API is read-only (GET)"}
    assert "metrics" not in RUNNING


def test_listen_error_names_the_setting_and_the_address():
    async def scenario():
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            edge = HttpEdge("web", address, lambda: (), ebpf_server.error_response, route=echo)
            with pytest.raises(ListenError) as info:
                await edge.start()
            return address, str(info.value)
    address, message = run(scenario())
    assert message == f"web.listen: cannot listen on {address}: Address already in use"


# -- an aiohttp application, a streamed answer, the cap ----------------------------------------------

def application(events: asyncio.Queue) -> web.Application:
    async def page(request):
        return web.Response(text="page")

    async def echo_json(request):
        return web.json_response(await request.json())

    async def stream(request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        while (event := await events.get()) is not None:
            await response.write(b"data: %s\n\n" % event.encode())
        return response

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/echo", echo_json)
    app.router.add_get("/events", stream)
    return app


def test_an_app_with_a_long_stream_outliving_the_read_timeout_and_the_cap():
    async def scenario():
        events: asyncio.Queue = asyncio.Queue()
        async with listening(app=application(events), setting="web", read_timeout=0.3, max_connections=2,
                             chunked=True, error=lambda s, m: (s, "text/plain", m.encode())) as edge:
            port = port_of(edge)
            page = await exchange(edge, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            posted = await exchange(edge, b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          b"7\r\n{\"a\": 1\r\n1\r\n}\r\n0\r\n\r\n")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /events HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            got = []
            for n in range(3):
                await asyncio.sleep(0.4)  # past the read timeout each time
                await events.put(f"e{n}")
                got.append(await asyncio.wait_for(reader.readuntil(b"\n\n"), 2))
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]  # senders beyond the cap
            await asyncio.sleep(0.1)
            dropped = edge.connections.dropped
            await events.put("after")
            got.append(await asyncio.wait_for(reader.readuntil(b"\n\n"), 2))
            await events.put(None)
            writer.close()
            for _, w in idle:
                w.close()
            return page, posted, got, dropped
    page, posted, got, dropped = run(scenario())
    assert parts(page)[0] == "HTTP/1.1 200 OK" and parts(page)[2] == b"page"
    assert parts(page)[1]["server"] == "netwatchd"
    assert json.loads(parts(posted)[2]) == {"a": 1}
    assert [g.split(b"data: ")[-1] for g in got] == [b"e0\n\n", b"e1\n\n", b"e2\n\n", b"after\n\n"]
    assert dropped == 2  # the idle ones went, oldest first; the stream stayed


def test_a_kept_alive_connection_waiting_counts_as_still_sending():
    async def scenario():
        async with listening(max_connections=2) as edge:
            port = port_of(edge)
            old_idle = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.05)
            kept = await asyncio.open_connection("127.0.0.1", port)
            kept[1].write(b"GET /k HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")
            await read_answer(kept[0])
            third = await asyncio.open_connection("127.0.0.1", port)  # over the cap: the oldest waiting one goes
            first = await asyncio.wait_for(old_idle[0].read(), 2)
            kept[1].write(b"GET /again HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")
            again = await read_answer(kept[0])
            for _, writer in (old_idle, kept, third):
                writer.close()
            return first, again, edge.connections.dropped
    first, again, dropped = run(scenario())
    assert first == b"" and dropped == 1  # the never-sending one, older than the kept one's wait
    assert json.loads(parts(again)[2])["path"] == "/again"
