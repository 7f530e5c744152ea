"""The web UI's listener against a real daemon watching a namespace LAN (web.enabled, web.listen;
the browser's view of the same pages is tests/integration/test_web_browser.py): every view's URL
answers, its data is the lab's, the live feed ticks, and what a hostile page or client sends is
refused with a named error."""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, Optional, Tuple

import pytest

from tests.support.alertmanager import free_port  # a free loopback port, as every listener test takes
from tests.support.lan import UDP_ECHO

pytestmark = pytest.mark.root

TICK = 0.2
ECHO_PORT = 7000
LAB = {"pc": ("00:00:0c:5a:21:01", "Cisco Systems, Inc"), "srv": ("00:1b:21:5a:21:02", "Intel Corporate"),
       "pi": ("b8:27:eb:5a:21:03", "Raspberry Pi Foundation")}



def request(base: str, path: str, method: str = "GET", headers: Optional[Dict[str, str]] = None,
            timeout: float = 10) -> Tuple[int, Dict[str, str], bytes]:
    """(status, headers, body) of one request, error statuses included."""
    req = urllib.request.Request(base + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read()


def get_json(base: str, path: str) -> Dict:
    status, headers, body = request(base, path)
    assert status == 200 and headers["Content-Type"].startswith("application/json"), (status, body[:300])
    return json.loads(body)


@pytest.fixture(scope="module")
def lab(make_world):
    """Three devices of known vendors on a namespace LAN, netwatchd watching its ports with the web
    UI on (about web.enabled, web.listen, devices.interfaces)."""
    w = make_world("nwweb")
    for name, (mac, _) in LAB.items():
        w.lan.add_node(name, mac)
    w.lan.start(w.node("srv"), sys.executable, "-c", UDP_ECHO, str(ECHO_PORT), ready="ready")
    port = free_port()
    w.start_daemon({"tick_interval_sec": TICK, "devices": {"interfaces": w.lan.ports(), "store_interval_sec": 0.5},
                    "web": {"enabled": True, "listen": f"127.0.0.1:{port}"}},
                   about=("web.enabled", "web.listen", "devices.interfaces"))
    for name in ("pc", "pi"):
        w.lan.send_udp(w.node(name), [f"{w.node('srv').ipv4}:{ECHO_PORT}"], 1, echo=True)
    w.wait_devices(lambda devices: {mac for mac, _ in LAB.values()} <= set(devices))
    w.base = f"http://127.0.0.1:{port}"
    w.port = port
    return w


# -- every view is a URL the server answers ------------------------------------------------------

@pytest.mark.parametrize("path,view", [("/", "overview"), ("/devices", "devices"), ("/alerts", "alerts"),
                                       ("/processes", "processes")])
def test_each_view_is_its_own_url_with_a_strict_policy_and_no_inline_script(lab, path, view):
    status, headers, body = request(lab.base, path)
    page = body.decode()
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert f'data-view="{view}"' in page
    assert headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self';")
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    scripts = [part.split(">", 1)[0] for part in page.split("<script")[1:]]
    charts = [' src="/static/vendor/chart.min.js" defer'] if view in ("overview", "alerts") else []
    assert scripts == charts + [' type="module" src="/static/app.js"']
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere


def test_a_device_page_by_mac_and_by_address_and_an_unknown_mac_is_a_404_page(lab):
    mac = LAB["pc"][0]
    status, _, body = request(lab.base, f"/devices/{mac}")
    assert status == 200 and f'data-key="{mac}"' in body.decode()
    # another spelling, or an address it used: redirected to the MAC as the inventory writes it
    status, headers, body = request(lab.base, f"/devices/{mac.upper().replace(':', '-')}")
    assert status == 200 and f'data-key="{mac}"' in body.decode()
    status, _, body = request(lab.base, f"/devices/{lab.node('pc').ipv4}")
    assert status == 200 and f'data-key="{mac}"' in body.decode()
    status, headers, body = request(lab.base, "/devices/02:00:00:00:00:99")
    assert status == 404 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<p id="error">no device with MAC 02:00:00:00:00:99 has been seen</p>' in body.decode()
    status, _, body = request(lab.base, "/devices/not-a-device")
    assert status == 404
    assert "&#x27;not-a-device&#x27; is neither a MAC address nor an IP address" in body.decode()


def test_unknown_paths_get_the_404_page_and_unknown_data_a_json_error(lab):
    status, headers, body = request(lab.base, "/nowhere")
    assert status == 404 and '<p id="error">no page &#x27;/nowhere&#x27; here</p>' in body.decode()
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    status, headers, body = request(lab.base, "/api/nowhere")
    assert (status, json.loads(body)) == (404, {"error": "no page '/api/nowhere' here"})
    status, _, body = request(lab.base, "/alerts/no-such-alert")
    assert status == 404 and "no alert &#x27;no-such-alert&#x27; in the alert log" in body.decode()
    status, _, body = request(lab.base, "/static/../netwatchd.yaml")
    assert status == 404


def test_the_devices_data_is_exactly_the_labs_with_their_vendors(lab):
    answer = get_json(lab.base, "/api/devices?sort=mac")
    assert answer["total"] == answer["matched"] == 3
    assert [(d["mac"], d["vendor"]) for d in answer["devices"]] == sorted(LAB.values())
    pc = next(d for d in answer["devices"] if d["mac"] == LAB["pc"][0])
    assert pc["ipv4"] == [lab.node("pc").ipv4] and pc["bytes_sent"] > 0
    # filtered and paged
    assert [d["mac"] for d in get_json(lab.base, "/api/devices?q=raspberry")["devices"]] == [LAB["pi"][0]]
    page = get_json(lab.base, "/api/devices?sort=mac&order=desc&offset=1&limit=1")
    assert (page["matched"], [d["mac"] for d in page["devices"]]) == (3, [sorted(LAB.values())[1][0]])


def test_bad_queries_are_named_400s(lab):
    for path, message in (
            ("/api/devices?limit=0", "limit must be an integer 1..500, got '0'"),
            ("/api/devices?sort=colour", "sort must be one of first_seen, last_seen, mac, vendor, hostname, address, "
                                         "traffic, got 'colour'"),
            ("/api/devices?q=" + "x" * 201, "q is longer than 200 characters"),
            ("/api/alerts?kind=nope", "kind must be one of " + ", ".join(
                ["new_device", "address_change", "connect_rate", "fan_out", "beacon", "mac_flood", "dhcp_server_new",
                 "dhcp_server_change", "dns_nxdomain_burst", "dns_tunnel", "port_scan", "host_scan",
                 "address_sweep"]) + ", got 'nope'"),
            ("/api/alerts?offset=99999999999999999999999", "offset must be an integer 0..1000000000, "
                                                            "got '99999999999999999999999'")):
        status, _, body = request(lab.base, path)
        assert (status, json.loads(body)) == (400, {"error": message}), path


def test_a_huge_query_string_is_refused_without_harm(lab):
    status, _, body = request(lab.base, "/api/devices?q=" + "y" * 20000)
    assert status in (400, 414, 431), (status, body[:200])
    assert get_json(lab.base, "/api/devices")["total"] == 3  # and the listener still answers


def test_only_get_and_head(lab):
    status, headers, body = request(lab.base, "/devices", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = request(lab.base, "/devices", method="HEAD")
    assert status == 200 and body == b""


def test_a_foreign_host_name_is_refused_dns_rebinding(lab):
    status, _, body = request(lab.base, "/api/devices", headers={"Host": f"attacker.example:{lab.port}"})
    assert status == 403 and "attacker.example" in json.loads(body)["error"]
    assert request(lab.base, "/", headers={"Host": f"localhost:{lab.port}"})[0] == 200


def test_the_live_feed_sends_an_event_at_once_and_one_per_tick(lab):
    with urllib.request.urlopen(lab.base + "/api/events", timeout=10) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.readline() == b"retry: 1000\n"
        events, started = [], time.monotonic()
        while len(events) < 4:
            line = stream.readline()
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
        elapsed = time.monotonic() - started
    assert all(e["devices"] == 3 for e in events)
    # the first at once, then one a tick
    assert elapsed < 3 * TICK + 1.0, elapsed
    assert events[1]["time_usec"] < events[2]["time_usec"] < events[3]["time_usec"]


def test_the_overview_counts_the_lab(lab):
    o = get_json(lab.base, "/api/overview")
    assert o["devices"] == {"total": 3, "new_today": 3}
    assert set(o["alerts"]["by_kind"]) >= {"new_device", "fan_out"}
    ticks = o["connects"]["per_tick"]
    assert len(ticks["time_usec"]) == len(ticks["connects"]) > 0
    # what the daemon's ticks cost it, by its own clock
    assert o["tick"]["ticks"] >= len(ticks["time_usec"]) and 0 < o["tick"]["recent_mean_ms"] <= o["tick"]["recent_max_ms"]


def test_a_device_s_data_has_its_series_with_a_band(lab):
    d = get_json(lab.base, f"/api/devices/{LAB['pc'][0]}")
    assert d["device"]["vendor"] == LAB["pc"][1] and d["z_threshold"] == 6.0
    series = d["series"]["connects"]
    assert len(series["time_usec"]) == len(series["value"]) == len(series["mean"]) == len(series["std"]) > 0
