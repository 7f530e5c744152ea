"""ebpf-server's API as a pure function over the real connect engine (fake probe and clock):
exact bodies, sentences, status codes and error bodies of ebpf-server v1.0.0's handlers, and the
places where we tell the truth instead (return_code, protocol, UTC timestamps)."""
import dataclasses
import json
import socket

import pytest

from netwatchd.api.ebpf_server import handle
from netwatchd.config import ConnectionsConfig
from netwatchd.connects.history import Counts
from netwatchd.connects.monitor import ConnectMonitor
from netwatchd.connects.records import OUTCOME_NAMES, PendingHandshake
from tests.unit.test_connect_monitor import Clock, FakeProbe
from tests.unit.test_connect_record import build_event

VERSION = "9.9.9"
T0 = 1_750_000_000_000_000  # 2025-06-15T15:06:40Z, in microseconds


def record(pid, command, port, ret=0, *, usec=T0, family="inet", address="127.0.0.1", transport="tcp",
           kind="connect", outcome=None):
    """A raw kernel record (boot offset 0: boot ns = wall ns), as the engine's probe hands it over."""
    outcome = outcome or ("succeeded" if ret == 0 else "in_progress" if ret == -115 else "refused")
    fields = {"boot_ns": usec * 1000, "tgid": pid, "tid": pid, "uid": 0, "ret": ret,
              "family": {"inet": 2, "inet6": 10, "unix": 1, "unspec": 0}[family], "port": port,
              "kind": {"connect": 1, "udp_send": 2}[kind], "transport": {"unknown": 0, "tcp": 1, "udp": 2}[transport],
              "outcome": {v: k for k, v in OUTCOME_NAMES.items()}[outcome], "comm": command}
    if family in ("inet", "inet6"):
        fields["addr_hex"] = socket.inet_pton(socket.AF_INET if family == "inet" else socket.AF_INET6, address).hex()
    elif family == "unix":
        fields["path"], fields["path_len"] = address, len(address)
    return build_event(fields)


@pytest.fixture
def engine():
    probe, clock = FakeProbe(), Clock(T0 / 1e6)
    mon = ConnectMonitor(probe, ConnectionsConfig(), clock=clock, is_gone=lambda pid: False, boot_offset_ns=0)
    probe.counters[(1234, 0)] = ("nginx", Counts(5, 2, 0, 0, 0, 4))
    # one handshake of 1234 still pending, its SYN sent 5 s ago
    probe.handshakes[1] = PendingHandshake(1, 1234, 0, "nginx", (T0 - 5_000_000) * 1000)
    probe.counters[(77, 0)] = ("nginx", Counts(1, 0, 0, 0, 0, 0))
    return mon


def call(engine, method, path, body=b"", query=None):
    engine.refresh()  # what the HTTP edge does before it answers
    status, ctype, raw, headers = handle(engine, method, path, query or {}, body, VERSION)
    return status, ctype, raw, dict(headers)


def answer(engine, method, path, body=b"", query=None):
    status, ctype, raw, _ = call(engine, method, path, body, query)
    assert ctype == "application/json" and raw.endswith(b"\n") and b"\n" not in raw[:-1], raw
    return status, json.loads(raw)


# -- / and /health --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_service_information_for_any_method_as_ebpf_server(engine, method):
    assert answer(engine, method, "/") == (200, {
        "service": "eBPF Network Monitor", "version": VERSION,
        "description": "HTTP API for eBPF-based network connection monitoring",
        "endpoints": {"POST /api/connection-summary": "Get connection summary for a process",
                      "GET|POST /api/list-connections": "List network connections",
                      "GET /health": "Service health check"},
        "documentation": "See netwatchd's README.md, section \"Coming from ebpf-server\"",
        "server": "netwatchd"})


def test_health_body_is_compact_with_sorted_keys(engine):
    assert call(engine, "GET", "/health") == (
        200, "application/json", b'{"server":"netwatchd","service":"ebpf-server","status":"healthy","version":"9.9.9"}\n', {})


@pytest.mark.parametrize("method, path, message, allow", [
    ("POST", "/health", "Only GET method is allowed", "GET"),
    ("GET", "/api/connection-summary", "Only POST method is allowed", "POST"),
    ("PUT", "/api/list-connections", "Only GET and POST methods are allowed", "GET, POST"),
    ("HEAD", "/api/list-connections", "Only GET and POST methods are allowed", "GET, POST"),
])
def test_other_methods_are_405_with_ebpf_servers_message(engine, method, path, message, allow):
    status, ctype, raw, headers = call(engine, method, path)
    assert (status, json.loads(raw), headers["Allow"]) == (405, {"error": "Method Not Allowed", "message": message}, allow)


@pytest.mark.parametrize("path", ["/nope", "/health/", "/api/connection-summary/x", "/api", "/metrics"])
def test_unknown_paths_are_gos_plain_text_404(engine, path):
    assert call(engine, "GET", path) == (404, "text/plain; charset=utf-8", b"404 page not found\n",
                                         {"X-Content-Type-Options": "nosniff"})


# -- POST /api/connection-summary -----------------------------------------------------------------

def test_summary_by_pid_has_no_command_field(engine):
    assert answer(engine, "POST", "/api/connection-summary", b'{"pid":1234,"duration":60}') == (200, {
        "total_attempts": 8, "pid": 1234, "duration": 60,
        "message": "Found 8 connection attempts from PID 1234 over 60 seconds",
        "succeeded": 5, "failed": 2, "refused": 2, "timed_out": 0, "other_failed": 0, "in_progress": 1, "unknown": 0,
        "udp_sends": 4, "latency_p50_usec": 0, "latency_p90_usec": 0, "latency_p99_usec": 0})


@pytest.mark.parametrize("body", [b'{"command":"nginx","duration":60}', b'{"process_name":"nginx","duration":60}',
                                  b'{"command":"nginx","process_name":"curl","duration":60}',
                                  b'{"Command":"nginx","DURATION":60}', b'  {"command":"nginx","duration":60} trailing',
                                  b'{"pid":null,"command":"nginx","duration":60}', b'{"pid":0,"command":"nginx","duration":60}'])
def test_summary_by_command_and_its_aliases(engine, body):
    assert answer(engine, "POST", "/api/connection-summary", body) == (200, {
        "total_attempts": 9, "command": "nginx", "duration": 60,
        "message": "Found 9 connection attempts from command 'nginx' over 60 seconds",
        "succeeded": 6, "failed": 2, "refused": 2, "timed_out": 0, "other_failed": 0, "in_progress": 1, "unknown": 0,
        "udp_sends": 4, "latency_p50_usec": 0, "latency_p90_usec": 0, "latency_p99_usec": 0})


@pytest.mark.parametrize("body, message", [
    (b"", "Invalid JSON request body"),
    (b"nginx", "Invalid JSON request body"),
    (b'{"command":"nginx",', "Invalid JSON request body"),
    (b'[{"command":"nginx","duration":60}]', "Invalid JSON request body"),
    (b'{"pid":"1234","duration":60}', "Invalid JSON request body"),
    (b'{"pid":1234,"duration":60.0}', "Invalid JSON request body"),
    (b'{"pid":1234,"duration":true}', "Invalid JSON request body"),
    (b'{"pid":1234,"duration":NaN}', "Invalid JSON request body"),
    (b'{"command":5,"duration":60}', "Invalid JSON request body"),
    (b"null", "duration must be positive"),
    (b'{"pid":1234}', "duration must be positive"),
    (b'{"pid":1234,"duration":0}', "duration must be positive"),
    (b'{"pid":1234,"duration":-5}', "duration must be positive"),
    (b'{"pid":1234,"duration":3601}', "duration cannot exceed 3600 seconds"),
    (b'{"pid":1234,"duration":3601,"command":"x"}', "duration cannot exceed 3600 seconds"),  # ebpf-server's order
    (b'{"pid":1234,"command":"nginx","duration":60}', "cannot specify both PID and command"),
    (b'{"pid":1234,"process_name":"nginx","duration":60}', "cannot specify both PID and command"),
    (b'{"duration":60}', "must specify either PID or command"),
    (b'{"command":"","duration":60}', "must specify either PID or command"),
    # ours, where ebpf-server answered about no process (or, above 2^32, another one)
    (b'{"pid":-5,"duration":60}', "pid must be between 1 and 4294967295, got -5"),
    (b'{"pid":4294967296,"duration":60}', "pid must be between 1 and 4294967295, got 4294967296"),
    (b'{"command":"systemd-resolved","duration":60}',
     "command 'systemd-resolved' is longer than 15 bytes; the kernel keeps only the first 15"),
])
def test_summary_bad_requests(engine, body, message):
    assert answer(engine, "POST", "/api/connection-summary", body) == (400, {"error": "Bad Request", "message": message})


def test_summary_duration_beyond_the_configured_window(engine):
    engine.reconfigure(dataclasses.replace(engine.cfg, max_window_sec=600))
    assert answer(engine, "POST", "/api/connection-summary", b'{"pid":1234,"duration":601}') == (400, {
        "error": "Bad Request", "message": "duration cannot exceed 600 seconds (connections.max_window_sec)"})


# -- GET|POST /api/list-connections --------------------------------------------------------------

@pytest.fixture
def listed(engine):
    for i in range(3):
        engine.probe.raw.append(record(1234, "nginx", 8080, usec=T0 + i * 1_500_000))
    engine.probe.raw.append(record(1234, "nginx", 9, -111, usec=T0 + 5_000_000))
    engine.probe.raw.append(record(99, "dig", 5353, transport="udp", usec=T0 + 999_999))
    engine.probe.raw.append(record(99, "dig", 443, family="inet6", address="::1", usec=T0 + 2_000_000))
    # not ebpf-server's to list: a unix socket, an unconnected UDP send, an AF_UNSPEC dissolve
    engine.probe.raw.append(record(5, "sshd", 0, family="unix", address="/run/x.sock", transport="unknown"))
    engine.probe.raw.append(record(99, "dig", 53, kind="udp_send", transport="udp", outcome="sent"))
    engine.probe.raw.append(record(99, "dig", 0, family="unspec", address="", transport="udp"))
    return engine


def ours(r):
    return {k: r[k] for k in ("pid", "command", "destination", "protocol", "return_code", "timestamp")}


def test_list_all_by_process_oldest_first(listed):
    status, a = answer(listed, "GET", "/api/list-connections")
    assert status == 200
    assert list(a) == ["total_pids", "connections", "truncated", "message"]
    assert list(a["connections"]) == ["1234", "99"]  # Go writes map keys sorted as strings
    assert [ours(r) for r in a["connections"]["1234"]] == [
        {"pid": 1234, "command": "nginx", "destination": "127.0.0.1:8080", "protocol": "TCP", "return_code": 0,
         "timestamp": "2025-06-15T15:06:40Z"},
        {"pid": 1234, "command": "nginx", "destination": "127.0.0.1:8080", "protocol": "TCP", "return_code": 0,
         "timestamp": "2025-06-15T15:06:41Z"},
        {"pid": 1234, "command": "nginx", "destination": "127.0.0.1:8080", "protocol": "TCP", "return_code": 0,
         "timestamp": "2025-06-15T15:06:43Z"},
        {"pid": 1234, "command": "nginx", "destination": "127.0.0.1:9", "protocol": "TCP", "return_code": -111,
         "timestamp": "2025-06-15T15:06:45Z"},
    ]
    # the truth where ebpf-server guessed: UDP on a port it would have called TCP; 443 over UDP stays UDP
    assert [ours(r) for r in a["connections"]["99"]] == [
        {"pid": 99, "command": "dig", "destination": "127.0.0.1:5353", "protocol": "UDP", "return_code": 0,
         "timestamp": "2025-06-15T15:06:40Z"},
        {"pid": 99, "command": "dig", "destination": "[::1]:443", "protocol": "TCP", "return_code": 0,
         "timestamp": "2025-06-15T15:06:42Z"},
    ]
    refused = a["connections"]["1234"][3]
    assert (refused["outcome"], refused["error"], refused["timestamp_usec"]) == ("refused", "ECONNREFUSED", T0 + 5_000_000)
    assert (a["total_pids"], a["truncated"], a["message"]) == (2, False, "Found 6 total connections across 2 processes")


@pytest.mark.parametrize("method, query, body", [
    ("GET", {"pid": ["1234"], "limit": ["2"]}, b""),
    ("GET", {"pid": ["+1234"], "limit": ["002"]}, b""),
    ("POST", {}, b'{"pid":1234,"limit":2}'),
    ("POST", {"pid": ["1"]}, b'{"PID":1234,"limit":2}'),  # a POST reads its body only
])
def test_limit_is_per_process_and_keeps_the_newest(listed, method, query, body):
    status, a = answer(listed, method, "/api/list-connections", body, query)
    assert status == 200
    assert [r["destination"] for r in a["connections"]["1234"]] == ["127.0.0.1:8080", "127.0.0.1:9"]
    assert (a["total_pids"], a["truncated"], a["message"]) == (1, True, "Found 2 connections for PID 1234")


def test_limit_applies_per_process_not_overall(listed):
    status, a = answer(listed, "GET", "/api/list-connections", query={"limit": ["1"]})
    assert {pid: len(rs) for pid, rs in a["connections"].items()} == {"1234": 1, "99": 1}
    assert (a["total_pids"], a["truncated"]) == (2, True)
    assert a["message"] == "Found 2 total connections across 2 processes (results truncated due to limit)"


def test_limit_zero_counts_processes_but_lists_none_as_ebpf_server(listed):
    assert answer(listed, "POST", "/api/list-connections", b'{"limit":0}') == (200, {
        "total_pids": 2, "connections": {}, "truncated": True,
        "message": "Found 0 total connections across 2 processes (results truncated due to limit)"})


@pytest.mark.parametrize("method, query, body", [
    ("GET", {"pid": ["4242"]}, b""), ("POST", {}, b'{"pid":4242}'), ("GET", {"pid": ["5"]}, b""),
])
def test_a_pid_without_ip_connects(listed, method, query, body):
    expected_pid = int(query["pid"][0]) if query else 4242
    assert answer(listed, method, "/api/list-connections", body, query) == (200, {
        "total_pids": 0, "connections": {}, "truncated": False,
        "message": f"Found 0 connections for PID {expected_pid}"})


@pytest.mark.parametrize("method, query, body, message", [
    ("GET", {"pid": ["abc"]}, b"", "Invalid PID parameter"),
    ("GET", {"pid": ["1.5"]}, b"", "Invalid PID parameter"),
    ("GET", {"pid": ["99999999999999999999"]}, b"", "Invalid PID parameter"),
    ("GET", {"limit": ["ten"]}, b"", "Invalid limit parameter"),
    ("GET", {"limit": ["1001"]}, b"", "limit cannot exceed 1000"),
    ("POST", {}, b'{"limit":1500}', "limit cannot exceed 1000"),
    ("POST", {}, b'{"limit":"50"}', "Invalid JSON request body"),
    ("POST", {}, b"", "Invalid JSON request body"),
    ("POST", {}, b"pid=1", "Invalid JSON request body"),
    # ours, where ebpf-server answered nonsense (a negative limit listed nothing, "truncated")
    ("GET", {"limit": ["-1"]}, b"", "limit cannot be negative"),
    ("GET", {"pid": ["0"]}, b"", "pid must be between 1 and 4294967295, got 0"),
    ("POST", {}, b'{"pid":-3}', "pid must be between 1 and 4294967295, got -3"),
])
def test_list_bad_requests(listed, method, query, body, message):
    assert answer(listed, method, "/api/list-connections", body, query) == (400, {"error": "Bad Request", "message": message})


@pytest.mark.parametrize("method, query, body", [
    ("GET", {"pid": [""], "limit": [""]}, b""), ("POST", {}, b"null"), ("POST", {}, b'{"pid":null,"limit":null}'),
    ("GET", {"limit": ["100", "x"]}, b""),  # Go's Query().Get: the first value
])
def test_empty_arguments_mean_the_defaults(listed, method, query, body):
    status, a = answer(listed, method, "/api/list-connections", body, query)
    assert (status, a["total_pids"], a["message"]) == (200, 2, "Found 6 total connections across 2 processes")


def test_nothing_recorded_yet(engine):
    assert answer(engine, "GET", "/api/list-connections") == (200, {
        "total_pids": 0, "connections": {}, "truncated": False, "message": "Found 0 total connections across 0 processes"})


def test_bodies_are_encoded_as_gos_json_encoder_writes_them(engine):
    engine.probe.raw.append(record(8, "a<b>&c\u00e9", 80))
    status, _, raw, _ = call(engine, "GET", "/api/list-connections", query={"pid": ["8"]})
    assert b'"command":"a\\u003cb\\u003e\\u0026c\xc3\xa9"' in raw
    assert json.loads(raw)["connections"]["8"][0]["command"] == "a<b>&c\u00e9"


def test_off_by_default_on_loopback_at_ebpf_servers_port():
    from netwatchd.config import DaemonConfig, EbpfServerApiConfig
    assert DaemonConfig().ebpf_server_api == EbpfServerApiConfig(enabled=False, listen="127.0.0.1:8080")
