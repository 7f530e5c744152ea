"""Both HTTP listeners on a hostile LAN, against one real daemon: the Host allow-list
(metrics.allowed_hosts, ebpf_server_api.allowed_hosts) refuses a DNS-rebinding name and keeps
`curl http://localhost:PORT/...` working byte for byte; 2000 idle connections do not starve
GET /health (the cap of 256 live connections per listener, README "Metrics and the JSON API");
5000-digit numbers and a duplicate Content-Length are 400s, with no traceback in the log.

The daemon runs the shipped config with both listeners on (metrics.enabled, metrics.listen,
ebpf_server_api.enabled, ebpf_server_api.listen: free loopback ports) and a name in
metrics.allowed_hosts, the keys this is about. It runs with the file-descriptor limit a
systemd service gets by default (DefaultLimitNOFILE: soft 1024), through prlimit, as it would
as a service; only the test's own client raises its limit to open 2000 sockets.
"""
from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import time
from contextlib import ExitStack
from typing import Optional, Tuple

import pytest

from netwatchd import __version__
from tests.conftest import require_tools

pytestmark = pytest.mark.root

IDLE = 2000
CAP = 256  # README, "Metrics and the JSON API": live connections per listener
FIVE_THOUSAND = "1" * 5000
SYSTEMD_DEFAULT_NOFILE = ["prlimit", "--nofile=1024:", "--"]


def free_ports(n: int):
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def config(metrics_port: int, api_port: int, api_allowed=()) -> dict:
    return {"metrics": {"enabled": True, "listen": f"127.0.0.1:{metrics_port}", "allowed_hosts": ["nas.lan"]},
            "ebpf_server_api": {"enabled": True, "listen": f"127.0.0.1:{api_port}", "allowed_hosts": list(api_allowed)}}


@pytest.fixture(scope="module")
def daemon(make_daemon):
    """About metrics.allowed_hosts and ebpf_server_api.allowed_hosts, with both listeners on
    (metrics.enabled, metrics.listen, ebpf_server_api.enabled, ebpf_server_api.listen)."""
    require_tools("curl", "prlimit")
    metrics_port, api_port = free_ports(2)
    d = make_daemon(config(metrics_port, api_port), command_prefix=SYSTEMD_DEFAULT_NOFILE,
                    about=("metrics.enabled", "metrics.listen", "metrics.allowed_hosts", "ebpf_server_api.enabled",
                           "ebpf_server_api.listen", "ebpf_server_api.allowed_hosts"))
    d.metrics_port, d.api_port = metrics_port, api_port
    return d


def curl(url: str, *args: str, body: Optional[bytes] = None) -> Tuple[int, bytes]:
    """(status, body) as curl gets them; `args` are curl's own options (-H ...)."""
    cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args]
    if body is not None:
        cmd += ["--data-binary", "@-"]
    r = subprocess.run([*cmd, url], input=body or b"", capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    out, _, status = r.stdout.rpartition(b"\n")
    return int(status), out


def assert_no_traceback(log: str) -> None:
    # the HTTP edge's own first (netwatchd/api/http.py logs "HTTP <listener> request failed")
    assert "request failed" not in log and "netwatchd/api/" not in log, log[log.find("Traceback") - 200:][:3000]
    assert "Traceback" not in log, log[log.find("Traceback") - 200:][:3000]


def raw(port: int, request: bytes) -> bytes:
    """Bytes sent as they are; everything the listener answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


# -- (a) Host ---------------------------------------------------------------------------------------

def test_rebinding_name_refused_on_the_metrics_listener(daemon):
    port = daemon.metrics_port
    assert curl(f"http://127.0.0.1:{port}/health", "-H", f"Host: rebind.example:{port}") == (403, json.dumps({
        "error": f"Host 'rebind.example:{port}' is not allowed here: use an IP address or localhost in the URL, "
                 "or add the name to metrics.allowed_hosts"}).encode() + b"\n")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"nas.lan:{port}", "NAS.lan.:1"):
        assert curl(f"http://127.0.0.1:{port}/health", "-H", f"Host: {host}") == (200, b'{"status": "ok"}\n'), host
    assert curl(f"http://localhost:{port}/health") == (200, b'{"status": "ok"}\n')  # curl's own Host
    assert curl(f"http://127.0.0.1:{port}/metrics", "-H", "Host: rebind.example")[0] == 403


def test_rebinding_name_refused_on_ebpf_servers_listener_in_its_error_shape(daemon):
    port = daemon.api_port
    assert curl(f"http://127.0.0.1:{port}/api/list-connections", "-H", f"Host: rebind.example:{port}") == (403, (
        '{"error":"Forbidden","message":"Host \'rebind.example:%d\' is not allowed here: use an IP address or '
        'localhost in the URL, or add the name to ebpf_server_api.allowed_hosts"}\n' % port).encode())
    health = f'{{"server":"netwatchd","service":"ebpf-server","status":"healthy","version":"{__version__}"}}\n'
    assert curl(f"http://localhost:{port}/health") == (200, health.encode())  # as ebpf-server's users type it
    assert curl(f"http://127.0.0.1:{port}/health") == (200, health.encode())
    # no Host at all (HTTP/1.0, a raw script) is no browser: answered
    assert raw(port, b"GET /health HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\n" + health.encode())


def test_allowed_hosts_change_on_reload(daemon):
    port = daemon.api_port
    daemon.write_config(config(daemon.metrics_port, port, api_allowed=["rebind.example"]))
    try:
        reloads = daemon.log().count("configuration reloaded")
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while daemon.log().count("configuration reloaded") == reloads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert curl(f"http://127.0.0.1:{port}/health", "-H", "Host: rebind.example")[0] == 200
    finally:
        daemon.write_config(config(daemon.metrics_port, port))
        reloads = daemon.log().count("configuration reloaded")
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while daemon.log().count("configuration reloaded") == reloads and time.monotonic() < deadline:
            time.sleep(0.05)
    assert curl(f"http://127.0.0.1:{port}/health", "-H", "Host: rebind.example")[0] == 403


# -- (b) 2000 idle connections ------------------------------------------------------------------------

def dropped(daemon) -> int:
    status, body = curl(f"http://127.0.0.1:{daemon.metrics_port}/metrics")
    assert status == 200
    (value,) = [int(line.split()[-1]) for line in body.decode().splitlines()
                if line.startswith('netwatchd_http_connections_dropped_total{listener="metrics"} ')]
    return value


def accept_queue(port: int) -> int:
    """Connections the kernel completed for the listener on 127.0.0.1:port that the daemon has
    not accepted yet (a listening socket's rx_queue in /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        for line in f:
            fields = line.split()
            if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def open_idle(stack: ExitStack, port: int, n: int):
    """n connections that send nothing. Opened 20 at a time, each batch accepted before the next:
    a client faster than the daemon's accept loop fills the kernel's accept queue (32 deep), and
    the SYNs dropped then are retried after a second each, which would time the kernel, not us."""
    socks = []
    for i in range(n):
        socks.append(stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10)))
        if i % 20 == 19:
            deadline = time.monotonic() + 10
            while accept_queue(port) and time.monotonic() < deadline:
                time.sleep(0.001)
    return socks


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_two_thousand_idle_connections_do_not_starve_health(daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE + 200:  # the test's client only; the daemon keeps its own (1024)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE + 1000), hard))
    before = dropped(daemon)
    with ExitStack() as stack:
        idle = open_idle(stack, daemon.metrics_port, IDLE)
        start = time.monotonic()
        reply = raw(daemon.metrics_port, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        latency = time.monotonic() - start
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b'\r\n\r\n{"status": "ok"}\n'), reply
        assert latency < 2.0, f"GET /health took {latency:.2f} s behind {IDLE} idle connections"
        # the listener closed the oldest idle ones to make room, and counted exactly those
        deadline = time.monotonic() + 5
        while True:
            count = dropped(daemon) - before
            closed = sum(closed_by_server(s) for s in idle)
            if closed == count or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert closed == count, (closed, count)
        assert IDLE - closed <= CAP
        assert not any(closed_by_server(s) for s in idle[-(CAP // 2):])  # the newest idle ones stay
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- (c) numbers and header fields ------------------------------------------------------------------

def test_five_thousand_digits_are_400_with_the_usual_message(daemon):
    m, api = daemon.metrics_port, daemon.api_port
    assert curl(f"http://127.0.0.1:{m}/netwatchd/api/list-connections?pid={FIVE_THOUSAND}") == (400, json.dumps({
        "error": f"pid must be an integer 0..4294967295, got '{FIVE_THOUSAND}'"}).encode() + b"\n")
    assert curl(f"http://127.0.0.1:{m}/netwatchd/api/connection-summary?pid=1&duration={FIVE_THOUSAND}") == (
        400, json.dumps({"error": f"duration must be an integer 0..4294967295, got '{FIVE_THOUSAND}'"}).encode() + b"\n")
    invalid_pid = b'{"error":"Bad Request","message":"Invalid PID parameter"}\n'
    invalid_json = b'{"error":"Bad Request","message":"Invalid JSON request body"}\n'
    assert curl(f"http://localhost:{api}/api/list-connections?pid={FIVE_THOUSAND}") == (400, invalid_pid)
    assert curl(f"http://localhost:{api}/api/list-connections", body=b'{"pid":%s}' % FIVE_THOUSAND.encode()) == (
        400, invalid_json)
    assert curl(f"http://localhost:{api}/api/connection-summary",
                body=b'{"pid":%s,"duration":60}' % FIVE_THOUSAND.encode()) == (400, invalid_json)
    assert_no_traceback(daemon.log())


@pytest.mark.parametrize("request_bytes, status, message", [
    (b"POST /api/list-connections HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
     "400 Bad Request", "Content-Length given 2 times; send it once"),
    (b"POST /api/list-connections HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n{}",
     "400 Bad Request", "malformed Content-Length '2, 2'"),
    (b"POST /api/list-connections HTTP/1.1\r\nContent-Length: %s\r\n\r\n" % FIVE_THOUSAND.encode(),
     "413 Request Entity Too Large", "request body over 8192 bytes"),
    # both framings at once: which one ends the body is what request smuggling plays on
    (b"POST /api/list-connections HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
     "400 Bad Request", "malformed request: Content-Length can't be present with Transfer-Encoding"),
    (b"GET /health HTTP/1.1\r\nHost: localhost\r\nHost: rebind.example\r\n\r\n",
     "400 Bad Request", "Host given 2 times; send it once"),
])
def test_header_fields_that_must_come_once(daemon, request_bytes, status, message):
    head, _, body = raw(daemon.api_port, request_bytes).partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].decode() == f"HTTP/1.1 {status}"
    assert json.loads(body) == {"error": status.split(" ", 1)[1], "message": message}


def test_no_traceback_in_the_log(daemon):
    """After every request above: each refusal was an answer, none an exception."""
    assert_no_traceback(daemon.log())
