"""The web UI without a daemon (netwatchd/api/web/): its data over a fake read model, and its
aiohttp application through aiohttp's test client -- the guard (auth, headers, methods), the
pages' 404s, the live feed. The real daemon and a real browser: tests/integration/test_web_api.py
and test_web_browser.py."""
from __future__ import annotations

import asyncio
import base64
import json
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from netwatchd.api.web import views
from netwatchd.api.web.app import WebUi
from netwatchd.api.web.guard import Credentials
from netwatchd.config import ConfigError, load_config, parse_config
from netwatchd.errors import NoSuchDevice
from netwatchd.read_model import Alert, CommandTotals, TickTime
from netwatchd.web_settings import parse_users
from tests.unit.test_metrics import FakeDaemon

MACS = ["00:00:0c:00:00:01", "b8:27:eb:00:00:02", "02:11:22:33:44:55"]


def summary(mac, n):
    return {"mac": mac, "vendor": ["Cisco Systems, Inc", "Raspberry Pi Foundation", ""][n], "randomized": n == 2,
            "confirmed": True, "hostname": ["", "pi.lan", "<script>x</script>"][n], "hostname_source": "dhcp",
            "first_seen_usec": 1000 + n, "last_seen_usec": 5000 - n, "interface": "eth0", "vlan": 0,
            "ipv4": [f"192.0.2.{n + 1}"], "ipv6": [], "counters": {"tx_ipv4_bytes": 100 * n, "rx_arp_bytes": 7,
                                                                    "tx_tcp_bytes": 999},
            "tcp_syns": 0, "peers": 0}


class WebFake(FakeDaemon):
    """FakeDaemon with three devices, three alerts, and one listener slot."""

    def __init__(self, cfg_text=""):
        super().__init__()
        self.cfg = parse_config(cfg_text)
        self.listeners = []
        self.log = [Alert("a-1", "new_device", f"device:{MACS[0]}", 10, "new device", 1.0),
                    Alert("a-2", "connect_rate", "command:curl", 20, "curl connects", 50.0, 5.0, 9.0, {"command": "curl"}),
                    Alert("a-3", "fan_out", f"device:{MACS[1]}", 30, "fan out", 40.0, 1.0, 7.0, {"mac": MACS[1]})]

    def device_summaries(self):
        return [summary(mac, n) for n, mac in enumerate(MACS)]

    def device_count(self):
        return len(MACS)

    def device(self, mac_or_ip):
        for n, mac in enumerate(MACS):
            if mac_or_ip == mac:
                return dict(summary(mac, n), dns_names=[], http_hosts=[], tls_names=[], http_requests=[],
                            recent_peers=[])
        raise NoSuchDevice(f"no device with MAC {mac_or_ip} has been seen")

    def alerts_enabled(self):
        return True

    def alert_log(self):
        return list(self.log)

    def newest_alerts(self, limit):
        return list(reversed(self.log))[:limit]

    def alert_counts(self):
        return {"new_device": 1, "connect_rate": 1, "fan_out": 1}

    def tick_series(self, table, key):
        return {"time_usec": [10, 20], "value": [1.0, 0.0], "mean": [0.5, 0.5], "std": [0.1, 0.1], "table": table,
                "key": key}

    def add_tick_listener(self, listener):
        self.listeners.append(listener)

    def tick_time(self):
        return TickTime(ticks=10, total_sec=0.05, recent_mean_sec=0.004, recent_max_sec=0.0091)


# -- the data ----------------------------------------------------------------------------------------

def test_devices_sorted_filtered_paged_and_traffic_counts_each_frame_once():
    model = WebFake()
    page = views.devices(model, {"sort": "traffic", "order": "desc", "limit": "2"})
    assert (page["total"], page["matched"]) == (3, 3)
    assert [d["mac"] for d in page["devices"]] == [MACS[2], MACS[1]]
    # L3 classes only: tx_tcp_bytes is inside tx_ipv4_bytes already
    assert (page["devices"][0]["bytes_sent"], page["devices"][0]["bytes_received"]) == (200, 7)
    assert [d["mac"] for d in views.devices(model, {"q": "PI.LAN"})["devices"]] == [MACS[1]]
    assert [d["mac"] for d in views.devices(model, {"q": "192.0.2.3"})["devices"]] == [MACS[2]]


@pytest.mark.parametrize("query,message", [
    ({"limit": "501"}, "limit must be an integer 1..500, got '501'"),
    ({"offset": "-1"}, "offset must be an integer 0..1000000000, got '-1'"),
    ({"order": "up"}, "order must be one of asc, desc, got 'up'"),
])
def test_bad_device_queries_name_the_parameter(query, message):
    with pytest.raises(views.WebQueryError, match=f"^{message}$"):
        views.devices(WebFake(), query)


def test_an_alert_names_the_series_that_shows_why_it_fired():
    model = WebFake()
    assert views.alert(model, "a-2")["series"]["table"] == "command_connects"
    assert (views.alert(model, "a-3")["series_table"], views.alert(model, "a-3")["series_key"]) == (
        "device_fan_out", MACS[1])
    assert views.alert(model, "a-1")["series"]["table"] == "device_connects"
    with pytest.raises(views.NotFound, match="no alert 'a-9' in the alert log"):
        views.alert(model, "a-9")
    assert views.chart_of(Alert("x", "mac_flood", "interface:eth0", 1, "m")) is None


def test_alerts_newest_first_by_kind_and_subject():
    model = WebFake()
    assert [a["id"] for a in views.alerts(model, {})["alerts"]] == ["a-3", "a-2", "a-1"]
    assert [a["id"] for a in views.alerts(model, {"kind": "fan_out"})["alerts"]] == ["a-3"]
    assert [a["id"] for a in views.alerts(model, {"subject": "command:"})["alerts"]] == ["a-2"]
    # a device's page lists the alerts about it: by subject or by a MAC in the details
    assert [a["id"] for a in views.device(model, MACS[1])["alerts"]] == ["a-3"]


def test_processes_top_commands_by_calls():
    answer = views.processes(WebFake(), {})
    assert answer["commands"][0]["command"] == "curl" and answer["commands"][0]["attempts"] == 3


# -- settings ----------------------------------------------------------------------------------------

def test_beyond_loopback_needs_an_auth_file(tmp_path):
    """About web.listen, web.basic_auth_file, web.token_file."""
    with pytest.raises(ConfigError, match="web.listen: beyond loopback the web UI shows which process talks"):
        parse_config('web: {enabled: true, listen: "0.0.0.0:9638"}')
    users = tmp_path / "users"
    users.write_text("# operators\nalice:s3cret\n")
    path = tmp_path / "netwatchd.yaml"
    path.write_text(f'web: {{enabled: true, listen: "0.0.0.0:9638", basic_auth_file: "{users}"}}\n')
    assert load_config(str(path)).web.basic_auth_file == str(users)
    users.write_text("alice\n")
    with pytest.raises(ConfigError, match=r"web.basic_auth_file: .*users: line 1 is not user:password"):
        load_config(str(path))
    path.write_text(f'web: {{token_file: "{tmp_path}/absent"}}\n')
    with pytest.raises(ConfigError, match="web.token_file: cannot read .*absent: No such file or directory"):
        load_config(str(path))


def test_users_file_lines():
    assert parse_users("a:b:c\n\n# x\nbob:pw\r\n") == {"a": "b:c", "bob": "pw"}
    with pytest.raises(ValueError, match="no user:password line"):
        parse_users("# nobody\n")


def test_credentials_basic_and_bearer():
    c = Credentials({"alice": "s3cret"}, "tok")
    basic = lambda text: {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}  # noqa: E731
    assert c.allows(basic("alice:s3cret")) and c.allows({"Authorization": "Bearer tok"})
    assert not c.allows(basic("alice:wrong")) and not c.allows(basic("mallory:s3cret"))
    assert not c.allows({"Authorization": "Basic !!!"}) and not c.allows({}) and not c.allows({"Authorization": "Bearer x"})
    assert Credentials().allows({})


# -- the application ---------------------------------------------------------------------------------

def run(ui: WebUi, scenario):
    async def main():
        async with TestClient(TestServer(ui.app)) as client:
            return await scenario(client)
    return asyncio.run(main())


def test_every_answer_carries_the_policy_and_a_password_is_asked_for(tmp_path):
    users = tmp_path / "users"
    users.write_text("alice:s3cret\n")
    ui = WebUi(WebFake(f'web: {{basic_auth_file: "{users}"}}'), chart_js=tmp_path / "absent.js")

    async def scenario(client):
        r = await client.get("/devices")
        assert r.status == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="netwatchd", charset="UTF-8"'
        assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
        auth = {"Authorization": "Basic " + base64.b64encode(b"alice:s3cret").decode()}
        r = await client.get("/devices", headers=auth)
        assert r.status == 200 and r.headers["X-Content-Type-Options"] == "nosniff"
        r = await client.get(f"/devices/{MACS[2]}", headers=auth)
        body = await r.text()
        assert r.status == 200 and f'data-key="{MACS[2]}"' in body
        r = await client.get("/api/devices?sort=mac", headers=auth)
        names = [d["hostname"] for d in (await r.json())["devices"]]
        assert "<script>x</script>" in names  # data as JSON text; the page sets it as text
        r = await client.get("/static/vendor/chart.min.js", headers=auth)
        assert r.status == 200 and "libjs-chart.js is not installed" in await r.text()
        r = await client.delete("/api/devices", headers=auth)
        assert r.status == 405 and r.headers["Allow"] == "GET, HEAD"
        r = await client.get("/static/app.js", headers=auth)
        etag = r.headers["ETag"]
        r = await client.get("/static/app.js", headers=dict(auth, **{"If-None-Match": etag}))
        assert r.status == 304
    run(ui, scenario)


def test_the_live_feed_sends_the_state_at_once_then_each_tick(tmp_path):
    model = WebFake()
    ui = WebUi(model, chart_js=tmp_path / "absent.js")

    async def scenario(client):
        r = await client.get("/api/events")
        assert r.headers["Content-Type"] == "text/event-stream"
        assert await r.content.readline() == b"retry: 1000\n"
        await r.content.readline()
        assert await r.content.readline() == b"event: tick\n"
        first = json.loads((await r.content.readline())[6:])
        assert (first["devices"], first["alerts"], first["newest_alert"]) == (3, 3, "a-3")
        await r.content.readline()
        model.log.append(Alert("a-4", "new_device", "device:x", 40, "m"))
        for listener in model.listeners:
            listener(40)
        assert await r.content.readline() == b"event: tick\n"
        second = json.loads((await r.content.readline())[6:])
        assert (second["time_usec"], second["newest_alert"]) == (40, "a-4")
        assert len(ui.hub.pages) == 1
        ui.close()  # the daemon stops: the stream ends (the browser reconnects to the next one)
        assert await r.content.read() == b"\n"  # the end of the last event, then the end
        assert len(ui.hub.pages) == 0
    run(ui, scenario)


def test_command_totals_unused_by_pages_stay_in_processes():
    model = WebFake()
    model.command_totals = lambda: {"a": CommandTotals(1, 0), "b": CommandTotals(5, 5)}
    assert [c["command"] for c in views.processes(model, {"limit": "1"})["commands"]] == ["b"]


def test_the_alerts_timeline_counts_each_kind_per_bucket():
    minute = 60_000_000
    log = [Alert(f"t-{i}", kind, "device:x", t, "m") for i, (kind, t) in enumerate(
        [("new_device", 0), ("new_device", 30_000_000), ("fan_out", 2 * minute + 1), ("new_device", 59 * minute)])]
    t = views.timeline(log)
    assert t["bucket_sec"] == 60 and len(t["start_usec"]) == 60
    assert t["counts"]["new_device"][:3] == [2, 0, 0] and t["counts"]["new_device"][59] == 1
    assert t["counts"]["fan_out"][2] == 1 and sum(t["counts"]["fan_out"]) == 1
    wide = views.timeline(log + [Alert("t-9", "beacon", "command:x", 61 * minute, "m")])
    assert wide["bucket_sec"] == 300 and list(wide["counts"]) == ["new_device", "fan_out", "beacon"]
    assert views.timeline([]) == {"bucket_sec": 0, "start_usec": [], "counts": {}}


def test_the_page_script_never_parses_text_as_markup():
    """Names, paths and messages come from devices and processes that may lie: the page's scripts
    put them in the page as text only (dom.js's el() sets textContent / text nodes). No API that
    parses a string as HTML or code may appear in them; the CSP forbids inline script as a second
    wall. Every script of ours is one the server serves."""
    from netwatchd.api.web.app import OWN_FILES, STATIC

    scripts = sorted(p.name for p in STATIC.glob("*.js"))
    assert scripts == sorted(name for name in OWN_FILES if name.endswith(".js"))
    for name in scripts:
        script = (STATIC / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                     "setTimeout(\"", "srcdoc"):
            assert sink not in script, (name, sink)
    page = (STATIC / "page.html").read_text()
    assert "<script>" not in page and not re.search(r"\son[a-z]+\s*=", page)  # no inline handlers


def test_a_reload_reads_the_users_file_again_and_a_bad_one_keeps_the_old(tmp_path):
    """About web.basic_auth_file (Daemon.reload calls WebUi.reconfigure once the file checked)."""
    users = tmp_path / "users"
    users.write_text("alice:one\n")
    model = WebFake(f'web: {{basic_auth_file: "{users}"}}')
    ui = WebUi(model, chart_js=tmp_path / "absent.js")
    basic = lambda text: {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}  # noqa: E731
    users.write_text("alice:two\n")
    assert ui.credentials.allows(basic("alice:one"))  # read at start, not at each request
    ui.reconfigure()
    assert ui.credentials.allows(basic("alice:two")) and not ui.credentials.allows(basic("alice:one"))
    users.write_text("nobody\n")
    ui.reconfigure()  # logged; the users read before stay
    assert ui.credentials.allows(basic("alice:two"))


def test_a_device_s_alerts_follow_the_log_as_it_grows_and_turns_over():
    model = WebFake()
    index = views.AlertsByDevice()
    assert [a.id for a in index.of(model, MACS[1])] == ["a-3"]
    model.log.append(Alert("a-4", "address_change", "ip:192.0.2.2", 40, "moved", details={"old_mac": MACS[1],
                                                                                          "new_mac": MACS[2]}))
    assert [a.id for a in index.of(model, MACS[1])] == ["a-3", "a-4"]
    assert [a.id for a in index.of(model, MACS[2])] == ["a-4"]
    model.log.pop(0)  # a full log drops its oldest as it takes a new one: same length, new newest
    model.log.append(Alert("a-5", "new_device", f"device:{MACS[0]}", 50, "again"))
    assert [a.id for a in index.of(model, MACS[0])] == ["a-5"]


def test_the_overview_says_what_a_tick_costs():
    o = views.overview(WebFake(), midnight_usec=1001)
    assert o["tick"] == {"ticks": 10, "total_sec": 0.05, "recent_mean_ms": 4.0, "recent_max_ms": 9.1}
    assert o["devices"] == {"total": 3, "new_today": 2}
