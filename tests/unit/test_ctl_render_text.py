"""netwatchctl's second line of defence: whatever strings an answer holds, what it prints has no
control or format character (the daemon escapes what processes and devices chose; a daemon or
bus peer that sends raw bytes still cannot write to the terminal). The daemon's own escapes
(backslashes) are printed as they are, never doubled."""
import time

import pytest

from netwatchd.ctl.render import (
    render_alerts,
    render_connections,
    render_device,
    render_devices,
    render_message,
    render_pattern,
    render_status,
    render_watched_alert,
)

RED = "\x1b[31mRED\x1b[0m"  # raw, as a daemon that does not escape would send it
RED_SHOWN = r"\x1b[31mRED\x1b[0m"
OSC52 = "\x1b]52;c;ZXZpbA==\x07"
OSC52_SHOWN = r"\x1b]52;c;ZXZpbA==\x07"
T = 1_700_000_000_000_000  # 2023-11-14 22:13:20 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def assert_printable(text):
    assert all(line.isprintable() for line in text.split("\n")), repr(text)


def connection(command, destination, family="unix", port=0):
    return {"timestamp_usec": T, "pid": 42, "tid": 42, "command": command, "uid": 1000, "kind": "connect",
            "family": family, "transport": "other", "destination": destination, "port": port, "return_code": 0,
            "error": "", "outcome": "succeeded", "latency_usec": 0, "end_error": ""}


def test_connections_raw_and_escaped_names():
    text = render_connections([connection(RED, "@nw\x1b[2J"), connection(RED_SHOWN, r"@nw\x1b[2J"),
                               connection("\u202eevil", "/tmp/a\\b")], truncated=False)
    assert_printable(text)
    assert text.split("\n") == [
        "TIME                     PID  COMMAND             UID   KIND     TRANSPORT  DESTINATION  LATENCY  RESULT",
        r"2023-11-14 22:13:20.000  42   \x1b[31mRED\x1b[0m  1000  connect  other      @nw\x1b[2J   -        succeeded",
        r"2023-11-14 22:13:20.000  42   \x1b[31mRED\x1b[0m  1000  connect  other      @nw\x1b[2J   -        succeeded",
        r"2023-11-14 22:13:20.000  42   \u202eevil          1000  connect  other      /tmp/a\b     -        succeeded",
    ]


def device(**changes):
    d = {"mac": "02:00:00:00:00:01", "randomized": False, "vendor": "", "hostname": "", "hostname_source": "",
         "ipv4": ["192.0.2.7"], "ipv6": [], "interface": "eth0", "vlan": 0, "first_seen_usec": T,
         "last_seen_usec": T, "tcp_syns": 3, "peers": 1, "dns_names": [], "http_hosts": [], "tls_names": [],
         "counters": {"tx_tcp_packets": 5}, "http_requests": [], "recent_peers": []}
    d.update(changes)
    return d


def test_devices_table_with_hostile_hostname_and_vendor():
    text = render_devices([device(hostname=OSC52 + "PC", vendor="Acme\u202e")])
    assert_printable(text)
    assert text.split("\n")[1] == (r"02:00:00:00:00:01  Acme\u202e  \x1b]52;c;ZXZpbA==\x07PC  192.0.2.7  eth0   "
                                   "5        0        3     2023-11-14 22:13:20.000")


def test_device_page_with_hostile_names_requests_and_peers():
    d = device(hostname="pc\x07", hostname_source="dhcp\x1b", dns_names=["a\x1bb.example", r"c\x1bd.example"],
               http_hosts=["h\u2066.example"], tls_names=["t\x9b.example"],
               http_requests=[["GET", "h\x1b.example", "/\x1b[2J"]],
               recent_peers=[["192.0.2.9", 443, "tcp", "p\x1b.example"]])
    text = render_device(d)
    assert_printable(text)
    lines = text.split("\n")
    assert r"     Hostname: pc\x07 (from dhcp\x1b)" in lines
    assert r"    DNS names: a\x1bb.example, c\x1bd.example" in lines
    assert r"   HTTP hosts: h\u2066.example" in lines
    assert r"    TLS names: t\u009b.example" in lines
    assert r"GET     h\x1b.example  /\x1b[2J" in lines
    assert r"192.0.2.9  443   tcp        p\x1b.example" in lines


def test_alerts_watch_and_pattern_lines():
    record = {"id": "a1", "timestamp_usec": T, "kind": "connect_rate", "subject": "command:" + RED,
              "message": "command " + RED + " made 4000 connects\nFAKE LINE"}
    table = render_alerts([record])
    assert_printable(table)
    assert table.split("\n")[1] == (r"2023-11-14 22:13:20.000  connect_rate  command:\x1b[31mRED\x1b[0m  "
                                    r"command \x1b[31mRED\x1b[0m made 4000 connects\x0aFAKE LINE")
    line = render_watched_alert("a1\x1b", "connect_rate", "command:" + RED, record)
    assert line == (r"2023-11-14 22:13:20.000  a1\x1b  connect_rate  command:\x1b[31mRED\x1b[0m  "
                    r"command \x1b[31mRED\x1b[0m made 4000 connects\x0aFAKE LINE")
    pattern = render_pattern("02:00:00:00:00:01", "192.0.2.9", 443, "tcp", OSC52)
    assert pattern.endswith(r"  02:00:00:00:00:01  tcp  192.0.2.9:443  \x1b]52;c;ZXZpbA==\x07")
    assert_printable(pattern)


def test_status_and_messages():
    text = render_status({"Interfaces": ["eth0", "x\x1b[2J"], "ConfigFile": "/etc/\u202eevil.yaml"}, now_usec=1)
    assert_printable(text)
    assert r"   Interfaces: eth0, x\x1b[2J" in text.split("\n")
    assert r"       Config: /etc/\u202eevil.yaml" in text.split("\n")
    assert render_message("command '" + RED + "' made 0 connection attempts") == (
        r"command '\x1b[31mRED\x1b[0m' made 0 connection attempts")
    assert render_message(r"command '\x1b[31mRED\x1b[0m'") == r"command '\x1b[31mRED\x1b[0m'"
