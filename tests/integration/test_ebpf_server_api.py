"""ebpf-server's HTTP API (v1.0.0, as its README documents it) against a real daemon with real BPF:
every case over real HTTP through curl and through Python's urllib, the README's jq one-liners run
verbatim, exact counts, sentences, status codes and error bodies.

The daemon runs with the shipped config/netwatchd.yaml, changed only in the keys this is about
(ebpf_server_api.enabled; listen stays the shipped 127.0.0.1:8080) and, as every test daemon, a
private state directory. It runs in a network namespace of the test's own
(nsenter --net), so "localhost:8080" in the one-liners is ours alone; the BPF programs see the
whole host, so the known connects are made by children in the host's namespace, to 127.0.0.1/::1.
"""
from __future__ import annotations

import json
import re
import secrets
import signal
import socket
import subprocess
import time

import pytest

from netwatchd import __version__
from tests.conftest import REPO, require_root_and_bcc, require_tools
from tests.support.daemon import DaemonProcess, PrivateSystemBus
from tests.integration.ebpf_api_support import Clients, KnownConnects, NetNamespace

pytestmark = pytest.mark.root

BASE = "http://localhost:8080"
CLIENTS = ["curl", "python"]
NGINX_OK, NGINX_REFUSED = 3, 1

# ebpf-server's README (the v1.0.0 one), "Integration with monitoring tools", verbatim. Ours
# (section "Coming from ebpf-server") must carry the same lines; both are run from ours.
EBPF_SERVER_ONE_LINERS = [
    "curl -s http://localhost:8080/api/connection-summary \\\n  -d '{\"command\":\"nginx\",\"duration\":60}' | jq '.total_attempts'",
    "CONNECTIONS=$(curl -s http://localhost:8080/api/list-connections | jq '.total_pids')\n"
    "echo \"Currently tracking $CONNECTIONS processes\"",
]


def api_config(**keys) -> dict:
    """The shipped config with ebpf-server's listener on: the one section this test is about."""
    return {"ebpf_server_api": {"enabled": True, **keys}}


@pytest.fixture(scope="module")
def world(make_daemon):
    """About ebpf_server_api.enabled (on, at the shipped listen address, in our namespace)."""
    require_tools("curl", "jq", "nsenter")
    others = subprocess.run(["pgrep", "-x", "nginx"], capture_output=True, text=True).stdout.split()
    assert not others, f"processes named nginx already run here ({others}): the nginx count would not be ours"
    with NetNamespace() as ns:
        daemon = make_daemon(api_config(), command_prefix=ns.prefix(), about=("ebpf_server_api.enabled",))
        try:
            command = "nwapi" + secrets.token_hex(4)
            with KnownConnects(command, 5, 3, extra=True) as child, \
                    KnownConnects("nginx", NGINX_OK, NGINX_REFUSED, extra=False) as nginx:
                clients = Clients(ns, BASE)
                try:
                    yield daemon, child, nginx, clients
                finally:
                    clients.close()
        finally:
            daemon.stop()  # before its namespace goes


def error(status_text: str, message: str) -> dict:
    return {"error": status_text, "message": message}


def call(clients, client, method, target, body=None):
    reply = clients.request(client, method, target, body if body is None else body.encode())
    return reply


def json_reply(clients, client, method, target, body=None):
    reply = call(clients, client, method, target, body)
    assert reply.content_type == "application/json", reply
    assert reply.body.endswith(b"\n") and b"\n" not in reply.body[:-1], reply.body
    return reply.status, json.loads(reply.body)


# -- the README's one-liners, verbatim ------------------------------------------------------------

def test_our_readme_carries_ebpf_servers_one_liners():
    text = (REPO / "README.md").read_text()
    for line in EBPF_SERVER_ONE_LINERS:
        assert line in text, line


def test_one_liner_total_attempts_for_nginx(world):
    _, _, _, clients = world
    rc, out, err = clients.shell(EBPF_SERVER_ONE_LINERS[0])
    assert (rc, out, err) == (0, f"{NGINX_OK + NGINX_REFUSED}\n", "")


def test_one_liner_currently_tracking(world):
    _, _, _, clients = world
    # Other processes on the host connect too, and the one-liner's own curl is a new process that
    # connects: the count is right when it is the API's answer just before plus that curl, and the
    # answer just after (retried until the host was quiet for that moment).
    for _ in range(20):
        before = json.loads(call(clients, "python", "GET", "/api/list-connections").body)["total_pids"]
        rc, out, err = clients.shell(EBPF_SERVER_ONE_LINERS[1])
        after = json.loads(call(clients, "python", "GET", "/api/list-connections").body)["total_pids"]
        if after == before + 1:
            break
    assert (rc, out, err) == (0, f"Currently tracking {before + 1} processes\n", "")
    assert after == before + 1 and before >= 2  # at least the two children of this test


# -- service information, health, 404 and 405 ----------------------------------------------------

@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_service_information(world, client, method):
    _, _, _, clients = world
    assert json_reply(clients, client, method, "/") == (200, {
        "service": "eBPF Network Monitor", "version": __version__,
        "description": "HTTP API for eBPF-based network connection monitoring",
        "endpoints": {"POST /api/connection-summary": "Get connection summary for a process",
                      "GET|POST /api/list-connections": "List network connections",
                      "GET /health": "Service health check"},
        "documentation": "See netwatchd's README.md, section \"Coming from ebpf-server\"",
        "server": "netwatchd"})


@pytest.mark.parametrize("client", CLIENTS)
def test_health(world, client):
    _, _, _, clients = world
    reply = call(clients, client, "GET", "/health")
    assert (reply.status, reply.content_type, reply.body) == (
        200, "application/json",
        f'{{"server":"netwatchd","service":"ebpf-server","status":"healthy","version":"{__version__}"}}\n'.encode())


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("method, target, body, message, allow", [
    ("POST", "/health", None, "Only GET method is allowed", "GET"),
    ("DELETE", "/health", None, "Only GET method is allowed", "GET"),
    ("GET", "/api/connection-summary", None, "Only POST method is allowed", "POST"),
    ("PUT", "/api/connection-summary", '{"pid":1,"duration":60}', "Only POST method is allowed", "POST"),
    ("DELETE", "/api/list-connections", None, "Only GET and POST methods are allowed", "GET, POST"),
])
def test_wrong_method_is_405(world, client, method, target, body, message, allow):
    _, _, _, clients = world
    reply = call(clients, client, method, target, body)
    assert (reply.status, reply.content_type, json.loads(reply.body), reply.headers["allow"]) == (
        405, "application/json", error("Method Not Allowed", message), allow)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("target", ["/nope", "/health/", "/api/connection-summary/", "/metrics"])
def test_unknown_path_is_404_as_go_writes_it(world, client, target):
    _, _, _, clients = world
    reply = call(clients, client, "GET", target)
    assert (reply.status, reply.content_type, reply.body) == (404, "text/plain; charset=utf-8", b"404 page not found\n")


@pytest.mark.parametrize("client", CLIENTS)
def test_head_has_the_get_answers_headers_and_no_body(world, client):
    _, _, _, clients = world
    reply = call(clients, client, "HEAD", "/")
    assert (reply.status, reply.content_type, reply.body) == (200, "application/json", b"")
    assert int(reply.headers["content-length"]) == len(call(clients, client, "GET", "/").body)


@pytest.mark.parametrize("request_bytes, status, message", [
    (b"GET /health HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", "431 Request Header Fields Too Large",
     "request head over 8192 bytes"),
    (b"POST /api/list-connections HTTP/1.1\r\nContent-Length: 8193\r\n\r\n", "413 Request Entity Too Large",
     "request body over 8192 bytes"),
    (b"GET /health\r\n\r\n", "400 Bad Request", "malformed request line"),
])
def test_limits_and_malformed_requests_get_ebpf_servers_error_body(world, request_bytes, status, message):
    _, _, _, clients = world
    head, _, body = clients.raw(request_bytes).partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].decode() == f"HTTP/1.1 {status}"
    assert json.loads(body) == error(status.split(" ", 1)[1], message)


def test_head_sends_no_body_and_a_body_may_wait_for_100_continue(world):
    _, _, _, clients = world
    answer = clients.raw(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n") and b"{" not in answer
    body = b'{"pid":1,"limit":1}'
    answer = clients.raw(b"POST /api/list-connections HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), answer


# -- POST /api/connection-summary -----------------------------------------------------------------

# ours after ebpf-server's fields: the 4 failures are refusals (a closed loopback port)
FINAL_OUTCOMES = {"refused": 4, "timed_out": 0, "other_failed": 0, "in_progress": 0, "unknown": 0, "udp_sends": 0}


def without_latency(answer: dict) -> dict:
    """The answer without its latency percentiles, after checking them: six loopback handshakes,
    each well under a second, in order."""
    p50, p90, p99 = (answer.pop(f"latency_p{q}_usec") for q in (50, 90, 99))
    assert 0 < p50 <= p90 <= p99 < 1_000_000, (p50, p90, p99)
    return answer

@pytest.mark.parametrize("client", CLIENTS)
def test_summary_by_pid(world, client):
    _, child, _, clients = world
    body = json.dumps({"pid": child.pid, "duration": 60})
    status, answer = json_reply(clients, client, "POST", "/api/connection-summary", body)
    assert (status, without_latency(answer)) == (200, {
        "total_attempts": 10, "pid": child.pid, "duration": 60,
        "message": f"Found 10 connection attempts from PID {child.pid} over 60 seconds",
        "succeeded": 6, "failed": 4, **FINAL_OUTCOMES})


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("field", ["command", "process_name"])
def test_summary_by_command(world, client, field):
    _, child, _, clients = world
    body = json.dumps({field: child.command, "duration": 3600})
    status, answer = json_reply(clients, client, "POST", "/api/connection-summary", body)
    assert (status, without_latency(answer)) == (200, {
        "total_attempts": 10, "command": child.command, "duration": 3600,
        "message": f"Found 10 connection attempts from command '{child.command}' over 3600 seconds",
        "succeeded": 6, "failed": 4, **FINAL_OUTCOMES})


@pytest.mark.parametrize("client", CLIENTS)
def test_summary_window_excludes_older_connects(world, client):
    _, child, _, clients = world
    # duration 1 s, asked 2 s or more after the child's last connect: none of them is in it
    time.sleep(max(0.0, child.end_time + 2.2 - time.time()))
    body = json.dumps({"pid": child.pid, "duration": 1})
    status, answer = json_reply(clients, client, "POST", "/api/connection-summary", body)
    assert (status, answer["total_attempts"], answer["message"]) == (
        200, 0, f"Found 0 connection attempts from PID {child.pid} over 1 seconds")


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("body, message", [
    ("", "Invalid JSON request body"),
    ("{not json", "Invalid JSON request body"),
    ('{"pid":"1234","duration":60}', "Invalid JSON request body"),
    ('{"pid":1234}', "duration must be positive"),
    ('{"pid":1234,"duration":0}', "duration must be positive"),
    ('{"pid":1234,"duration":-60}', "duration must be positive"),
    ('{"pid":1234,"duration":3601}', "duration cannot exceed 3600 seconds"),
    ('{"pid":1234,"command":"curl","duration":60}', "cannot specify both PID and command"),
    ('{"duration":60}', "must specify either PID or command"),
    ('{"pid":-1,"duration":60}', "pid must be between 1 and 4294967295, got -1"),
    ('{"command":"a-name-far-too-long","duration":60}',
     "command 'a-name-far-too-long' is longer than 15 bytes; the kernel keeps only the first 15"),
])
def test_summary_bad_request(world, client, body, message):
    _, _, _, clients = world
    assert json_reply(clients, client, "POST", "/api/connection-summary", body) == (400, error("Bad Request", message))


# -- GET|POST /api/list-connections ---------------------------------------------------------------

def seconds_between(start: float, end: float) -> set:
    return {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in range(int(start), int(end) + 1)}


def check_records(records, child, expected):
    assert [(r["pid"], r["command"], r["destination"], r["protocol"], r["return_code"]) for r in records] == [
        (child.pid, child.command, e.destination, e.protocol, e.return_code) for e in expected]
    allowed = seconds_between(child.start_time, child.end_time)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["timestamp"]) and r["timestamp"] in allowed
               for r in records), (records, allowed)
    assert [r["timestamp"] for r in records] == sorted(r["timestamp"] for r in records)  # oldest first


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_list_one_pid_everything(world, client, method):
    _, child, _, clients = world
    target, body = ((f"/api/list-connections?pid={child.pid}&limit=1000", None) if method == "GET"
                    else ("/api/list-connections", json.dumps({"pid": child.pid, "limit": 1000})))
    status, answer = json_reply(clients, client, method, target, body)
    assert status == 200
    assert (answer["total_pids"], list(answer["connections"]), answer["truncated"], answer["message"]) == (
        1, [str(child.pid)], False, f"Found 10 connections for PID {child.pid}")
    check_records(answer["connections"][str(child.pid)], child, child.expected())


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_list_limit_keeps_the_newest_per_pid(world, client, method):
    _, child, _, clients = world
    target, body = ((f"/api/list-connections?pid={child.pid}&limit=3", None) if method == "GET"
                    else ("/api/list-connections", json.dumps({"pid": child.pid, "limit": 3})))
    status, answer = json_reply(clients, client, method, target, body)
    assert (status, answer["total_pids"], answer["truncated"], answer["message"]) == (
        200, 1, True, f"Found 3 connections for PID {child.pid}")
    check_records(answer["connections"][str(child.pid)], child, child.expected()[-3:])


@pytest.mark.parametrize("client", CLIENTS)
def test_list_limit_applies_to_each_pid(world, client):
    _, child, nginx, clients = world
    status, answer = json_reply(clients, client, "POST", "/api/list-connections", '{"limit":2}')
    assert status == 200 and answer["truncated"] is True
    assert {len(records) for records in answer["connections"].values()} <= {1, 2}
    check_records(answer["connections"][str(child.pid)], child, child.expected()[-2:])
    check_records(answer["connections"][str(nginx.pid)], nginx, nginx.expected()[-2:])
    shown = sum(len(records) for records in answer["connections"].values())
    assert answer["total_pids"] == len(answer["connections"])  # with limit > 0 every counted pid is listed
    assert answer["message"] == (f"Found {shown} total connections across {answer['total_pids']} processes"
                                 " (results truncated due to limit)")


@pytest.mark.parametrize("client", CLIENTS)
def test_list_default_limit_and_keys_sorted_as_go_does(world, client):
    _, child, nginx, clients = world
    status, answer = json_reply(clients, client, "GET", "/api/list-connections")
    assert status == 200 and list(answer) == ["total_pids", "connections", "truncated", "message"]
    assert list(answer["connections"]) == sorted(answer["connections"])
    assert all(1 <= len(records) <= 100 for records in answer["connections"].values())  # per PID
    check_records(answer["connections"][str(child.pid)], child, child.expected())
    check_records(answer["connections"][str(nginx.pid)], nginx, nginx.expected())


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("method, target, body, message", [
    ("GET", "/api/list-connections?pid=abc", None, "Invalid PID parameter"),
    ("GET", "/api/list-connections?limit=1.5", None, "Invalid limit parameter"),
    ("GET", "/api/list-connections?limit=1001", None, "limit cannot exceed 1000"),
    ("GET", "/api/list-connections?limit=-1", None, "limit cannot be negative"),
    ("POST", "/api/list-connections", '{"limit":1500}', "limit cannot exceed 1000"),
    ("POST", "/api/list-connections", '{"pid":"x"}', "Invalid JSON request body"),
    ("POST", "/api/list-connections", "", "Invalid JSON request body"),
])
def test_list_bad_request(world, client, method, target, body, message):
    _, _, _, clients = world
    assert json_reply(clients, client, method, target, body) == (400, error("Bad Request", message))


# -- the listener's setting -----------------------------------------------------------------------

def test_reload_names_the_listener_as_restart_only_and_it_keeps_serving(world):
    """A reload changing ebpf_server_api.listen: named restart-only, the listener stays."""
    daemon, _, _, clients = world
    daemon.write_config(api_config(listen="127.0.0.1:8081"), about=("ebpf_server_api.listen",))
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    line = "changed settings that take effect on restart: ebpf_server_api.listen"
    while line not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert line in daemon.log()
    assert call(clients, "python", "GET", "/health").status == 200


def test_listen_error_names_the_setting():
    """ebpf_server_api.enabled, ebpf_server_api.listen on an address taken: the daemon says which."""
    require_root_and_bcc()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    try:
        with PrivateSystemBus() as bus:
            d = DaemonProcess(bus, api_config(listen=address), about=("ebpf_server_api.enabled", "ebpf_server_api.listen"))
            try:
                with pytest.raises(RuntimeError):
                    d.start(timeout=60)
                assert f"netwatchd: ebpf_server_api.listen: cannot listen on {address}: Address already in use" in d.log()
                assert d.proc.returncode == 1
            finally:
                d.cleanup()
    finally:
        taken.close()


def test_a_chunked_body_is_read_as_its_content_length_twin(world):
    """ebpf-server's Go server reads chunked request bodies; so do we (bounded the same: 8 KiB)."""
    _, _, _, clients = world
    for body in (b'{"pid": "x"}', b"{"):
        sized = clients.raw(b"POST /api/connection-summary HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        chunked = clients.raw(b"POST /api/connection-summary HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        status = lambda reply: reply.split(b"\r\n")[0]  # noqa: E731
        answer = lambda reply: json.loads(reply.partition(b"\r\n\r\n")[2])  # noqa: E731
        assert status(chunked) == status(sized) == b"HTTP/1.1 400 Bad Request"
        assert answer(chunked) == answer(sized) and answer(chunked)["error"] == "Bad Request"
    big = b"x" * 9000
    reply = clients.raw(b"POST /api/connection-summary HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
    assert reply.split(b"\r\n")[0] == b"HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(reply.partition(b"\r\n\r\n")[2]) == error("Request Entity Too Large", "request body over 8192 bytes")
