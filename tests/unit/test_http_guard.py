"""The HTTP listeners' protections (netwatchd/api/http_guard.py), pure, and where both listeners
use them: the Host allow-list (DNS rebinding), header fields that must come once, numbers bounded
before int(), the cap on live connections. Expected values are written out here, and the
messages are the ones each listener already gave for a too-large value."""
import json
import math
from urllib.parse import quote

import pytest

from netwatchd.api.ebpf_server import error_response
from netwatchd.api.http import HttpApi, parse_head
from netwatchd.api.http_guard import (BadRequest, ConnectionCap, check_host, content_length, decimal, host_allowed,
                                      parse_allowed_host, parse_headers)
from netwatchd.api.metrics import Snapshot, render
from netwatchd.config import ConfigError, parse_config
from tests.unit.test_ebpf_server_api import answer, engine, listed  # noqa: F401  (fixtures)
from tests.unit.test_metrics import FakeDaemon, samples

FIVE_THOUSAND = "1" * 5000  # past Python's 4300-digit int() limit


# -- numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, signed, value", [
    ("0", False, 0), ("007", False, 7), ("4294967295", False, 4294967295), ("99999999999999999999", False, 99999999999999999999),
    ("100000000000000000000", False, math.inf),  # 21 significant digits: never converted
    (FIVE_THOUSAND, False, math.inf), ("0" * 5000 + "42", False, 42), ("-" + FIVE_THOUSAND, True, -math.inf),
    ("+5", True, 5), ("-5", True, -5), ("+5", False, None), ("-5", False, None),
    ("", False, None), ("1.5", False, None), (" 5", False, None), ("5\n", False, None), ("0x10", False, None),
    ("\u00b2", False, None), ("\u0661\u0662", False, None),  # digits to str.isdigit, not ASCII
])
def test_decimal_is_bounded_before_conversion(text, signed, value):
    assert decimal(text, signed=signed) == value


# -- header fields ---------------------------------------------------------------------------------

HEAD = b"POST /api/list-connections HTTP/1.1\r\nHost: localhost:8080\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\n"


def test_parse_headers_keeps_every_value_in_order():
    assert parse_headers(HEAD) == {"host": ["localhost:8080"], "content-length": ["2"], "x-a": ["1", "2"]}


def fields_of(*lines: str):
    return parse_headers(("POST / HTTP/1.1\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode())


@pytest.mark.parametrize("lines, length", [
    ((), 0), (("Content-Length: 12",), 12), (("Content-Length: 0",), 0), (("content-length:8192",), 8192),
    (("Content-Length: 0012",), 12),
])
def test_content_length(lines, length):
    assert content_length(fields_of(*lines), 8192) == length


@pytest.mark.parametrize("lines, status, message", [
    (("Content-Length: 5", "Content-Length: 5"), 400, "Content-Length given 2 times; send it once"),
    (("Content-Length: 5", "content-length: 7"), 400, "Content-Length given 2 times; send it once"),
    (("Content-Length: 5, 5",), 400, "malformed Content-Length '5, 5'"),
    (("Content-Length: +5",), 400, "malformed Content-Length '+5'"),
    (("Content-Length:",), 400, "malformed Content-Length ''"),
    (("Content-Length: x",), 400, "malformed Content-Length 'x'"),
    (("Content-Length: 8193",), 413, "request body over 8192 bytes"),
    (("Content-Length: " + FIVE_THOUSAND,), 413, "request body over 8192 bytes"),
    (("Transfer-Encoding: chunked",), 411, "send the body with a Content-Length (chunked bodies are not accepted)"),
    (("Transfer-Encoding: chunked", "Content-Length: 5"), 411,
     "send the body with a Content-Length (chunked bodies are not accepted)"),
])
def test_content_length_refused(lines, status, message):
    with pytest.raises(BadRequest) as info:
        content_length(fields_of(*lines), 8192)
    assert (info.value.status, str(info.value)) == (status, message)


# -- the Host header -------------------------------------------------------------------------------

@pytest.mark.parametrize("host", [
    None, "",  # no Host: not a browser (HTTP/1.0, a raw script)
    "127.0.0.1", "127.0.0.1:9637", "192.0.2.7:80", "[::1]:9637", "[::1]", "[2001:DB8::1]:8080", "127.0.0.1:",
    "localhost", "localhost:8080", "LOCALHOST:9637", "localhost.", "localhost.:9637",
    "nas.lan", "NAS.LAN:9637", "nas.lan.:1",
])
def test_allowed_hosts(host):
    assert host_allowed(host, ("nas.lan",))


@pytest.mark.parametrize("host", [
    "rebind.example", "rebind.example:9637", "nas.lan.rebind.example", "evil.localhost", "localhost.evil.example",
    "2130706433", "127.1", "0x7f.0.0.1",  # what browsers never send: they write 127.0.0.1
    "::1", "[127.0.0.1]:80", "[::1]junk", "[::1:80", "localhost:abc", "localhost:123456", "localhost:80:80", ":9637",
])
def test_refused_hosts(host):
    assert not host_allowed(host, ("nas.lan",))


def test_no_names_allowed_by_default():
    assert not host_allowed("nas.lan:9637", ())
    assert parse_config("").metrics.allowed_hosts == () and parse_config("").ebpf_server_api.allowed_hosts == ()


def test_check_host_refuses_with_403_naming_the_setting_and_two_hosts_with_400():
    with pytest.raises(BadRequest) as info:
        check_host(fields_of("Host: rebind.example:9637"), (), "metrics.allowed_hosts")
    assert (info.value.status, str(info.value)) == (403, "Host 'rebind.example:9637' is not allowed here: use an IP "
                                                         "address or localhost in the URL, or add the name to "
                                                         "metrics.allowed_hosts")
    with pytest.raises(BadRequest) as info:
        check_host(fields_of("Host: localhost", "Host: rebind.example"), (), "metrics.allowed_hosts")
    assert (info.value.status, str(info.value)) == (400, "Host given 2 times; send it once")
    check_host(fields_of("Host: localhost:9637"), (), "metrics.allowed_hosts")


@pytest.mark.parametrize("section", ["metrics", "ebpf_server_api"])
def test_allowed_hosts_config(section):
    cfg = parse_config(f"{section}: {{allowed_hosts: [nas.lan, Monitor.Example.org.]}}")
    assert getattr(cfg, section).allowed_hosts == ("nas.lan", "Monitor.Example.org.")
    assert host_allowed("monitor.example.org:80", getattr(cfg, section).allowed_hosts)


@pytest.mark.parametrize("entries, problem", [
    ('["nas.lan:9637"]', "[0]: 'nas.lan:9637': give the name without a port (any port is accepted)"),
    ('[nas.lan, "192.0.2.1"]', "[1]: '192.0.2.1' is an IP address, which is always accepted as Host; list names "
                               "only (this list does not restrict which clients may connect)"),
    ('["[::1]"]', "[0]: '[::1]' is an IP address, which is always accepted as Host; list names only (this list "
                  "does not restrict which clients may connect)"),
    ('["*.lan"]', "[0]: '*.lan' is not a host name as clients type it in URLs (nas.lan, monitor.example.org), "
                  "without a port"),
    ('["a b"]', "[0]: 'a b' is not a host name as clients type it in URLs (nas.lan, monitor.example.org), "
                "without a port"),
    ("[5]", "[0]: 5 is not a host name as clients type it in URLs (nas.lan, monitor.example.org), without a port"),
    ("nas.lan", ": expected a list, got 'nas.lan'"),
])
@pytest.mark.parametrize("section", ["metrics", "ebpf_server_api"])
def test_a_bad_allowed_host_is_a_config_error_naming_it(section, entries, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(f"{section}: {{allowed_hosts: {entries}}}", "f.yaml")
    assert str(info.value) == f"f.yaml: {section}.allowed_hosts{problem}"


def test_parse_allowed_host_normalizes():
    assert parse_allowed_host(" NAS.Lan. ") == "nas.lan"


# -- the connection cap ----------------------------------------------------------------------------

class Closer:
    def __init__(self):
        self.closed = []

    def __call__(self, name):
        return lambda: self.closed.append(name)


def test_cap_closes_the_oldest_still_receiving_then_the_oldest_answering():
    closer, cap = Closer(), ConnectionCap(3)
    a, b, c = (cap.admit(closer(n)) for n in "abc")
    assert (len(cap), closer.closed, cap.dropped) == (3, [], 0)
    cap.received(a)  # a's request is in: it is being answered
    d = cap.admit(closer("d"))
    assert (len(cap), closer.closed, cap.dropped) == (3, ["b"], 1)  # b: oldest still receiving, not a
    cap.received(c)
    cap.received(d)
    cap.admit(closer("e"))  # only the newcomer is receiving: the oldest answering goes
    assert (len(cap), closer.closed, cap.dropped) == (3, ["b", "a"], 2)
    cap.release(c)
    cap.release(b)  # an ended connection that admit closed: nothing left to do
    cap.admit(closer("f"))
    assert (len(cap), closer.closed, cap.dropped) == (3, ["b", "a"], 2)
    cap.release(d)
    assert len(cap) == 2


def test_two_thousand_idle_connections_leave_room_for_one_request():
    closer, cap = Closer(), ConnectionCap(256)
    for n in range(2000):
        cap.admit(closer(n))
    health = cap.admit(closer("health"))
    assert len(cap) == 256 and cap.dropped == 2000 + 1 - 256
    assert closer.closed == list(range(2000 + 1 - 256))  # the oldest, in order; never the newcomer
    cap.received(health)
    for n in range(300):  # the flood goes on: the request being answered stays
        cap.admit(closer(f"more{n}"))
    assert "health" not in closer.closed


def test_cap_needs_room_for_one():
    with pytest.raises(ValueError):
        ConnectionCap(0)


def test_dropped_connections_are_exported_per_listener():
    s = samples(render(Snapshot(http_connections_dropped={"metrics": 3, "ebpf_server_api": 0}), 20))
    assert s['netwatchd_http_connections_dropped_total{listener="metrics"}'] == "3"
    assert s['netwatchd_http_connections_dropped_total{listener="ebpf_server_api"}'] == "0"


# -- where the listeners use them: a 5000-digit number is a 400 with the existing message ------------

def respond(target):
    return HttpApi(FakeDaemon(), FakeDaemon().cfg.metrics).respond("GET", *parse_head(
        f"GET {target} HTTP/1.1\r\n\r\n".encode())[1:])


@pytest.mark.parametrize("name, value", [("pid", FIVE_THOUSAND), ("limit", FIVE_THOUSAND), ("pid", "99999999999"),
                                         ("pid", "\u00b2")])  # sent as %C2%B2; a digit to str.isdigit, not to int()
def test_our_listener_bounds_query_numbers(name, value):
    status, ctype, body = respond(f"/netwatchd/api/list-connections?{name}={quote(value)}")
    assert (status, ctype, json.loads(body)) == (400, "application/json", {
        "error": f"{name} must be an integer 0..4294967295, got {value!r}"})


@pytest.mark.parametrize("query, message", [
    ({"pid": [FIVE_THOUSAND]}, "Invalid PID parameter"),
    ({"pid": ["-" + FIVE_THOUSAND]}, "Invalid PID parameter"),
    ({"limit": [FIVE_THOUSAND]}, "Invalid limit parameter"),
])
def test_ebpf_server_query_numbers_bounded(engine, query, message):  # noqa: F811
    assert answer(engine, "GET", "/api/list-connections", query=query) == (400, {"error": "Bad Request",
                                                                                 "message": message})


@pytest.mark.parametrize("path, body", [
    ("/api/list-connections", b'{"pid":' + FIVE_THOUSAND.encode() + b"}"),
    ("/api/list-connections", b'{"limit":-' + FIVE_THOUSAND.encode() + b"}"),
    ("/api/connection-summary", b'{"pid":' + FIVE_THOUSAND.encode() + b',"duration":60}'),
    ("/api/connection-summary", b'{"pid":1234,"duration":' + FIVE_THOUSAND.encode() + b"}"),
])
def test_ebpf_server_json_numbers_bounded(engine, path, body):  # noqa: F811
    assert answer(engine, "POST", path, body) == (400, {"error": "Bad Request", "message": "Invalid JSON request body"})


def test_ebpf_server_leading_zeros_and_unknown_keys_as_go(listed):  # noqa: F811
    # Go's strconv.Atoi takes any number of leading zeros; its JSON decoder skips unknown keys
    # without converting their numbers
    status, a = answer(listed, "GET", "/api/list-connections", query={"pid": ["0" * 5000 + "1234"]})
    assert (status, a["message"]) == (200, "Found 4 connections for PID 1234")
    status, a = answer(listed, "POST", "/api/list-connections", b'{"pid":1234,"x":[' + FIVE_THOUSAND.encode() + b"]}")
    assert (status, a["message"]) == (200, "Found 4 connections for PID 1234")


def test_ebpf_server_refusal_has_its_error_shape():
    assert error_response(403, "m") == (403, "application/json", b'{"error":"Forbidden","message":"m"}\n', ())
