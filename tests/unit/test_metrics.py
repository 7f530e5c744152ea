"""The Prometheus exposition and the HTTP edge's parsing, without a daemon or root."""
import pytest

from netwatchd.alerting.alerts import KINDS
from netwatchd.config import ConfigError, parse_config, split_listen
from netwatchd.api.http import BadRequest, HttpApi, connection_summary, parse_head
from netwatchd.api.metrics import Snapshot, escape_label, parse_fdinfo, read_bpf_stats, render
from netwatchd.connects.queries import InvalidQuery
from netwatchd.errors import NoSuchDevice
from netwatchd.read_model import CommandTotals, EventsLost, FleetStatus, HostIdentity, ReadModel, TickTime


def samples(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = value
    return out


def test_every_family_has_help_and_type_before_its_samples():
    text = render(Snapshot(devices=3, bpf={"nw_connect4": (1500, 3)}), 5)
    assert text.endswith("\n")
    seen_type = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            seen_type.add(name)
            if kind == "histogram":  # its samples are name_bucket, name_sum, name_count
                seen_type.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
        elif not line.startswith("#"):
            assert line.split("{")[0].split(" ")[0] in seen_type, line
    assert "# TYPE netwatchd_devices gauge" in text
    assert "# TYPE netwatchd_connect_attempts_total counter" in text
    s = samples(text)
    assert s["netwatchd_devices"] == "3"
    assert s['netwatchd_bpf_run_time_seconds_total{program="nw_connect4"}'] == "1.5e-06"
    assert s['netwatchd_bpf_run_count_total{program="nw_connect4"}'] == "3"


def test_top_n_commands_and_the_rest_as_other():
    snap = Snapshot(command_attempts={"curl": 10, "ssh": 5, "wget": 5, "nc": 1, "other": 2},
                    command_failed={"curl": 1, "nc": 1, "other": 1}, overflow_attempts=7, overflow_failed=2)
    s = samples(render(snap, 2))
    attempts = {k: v for k, v in s.items() if k.startswith("netwatchd_connect_attempts_total")}
    assert attempts == {
        'netwatchd_connect_attempts_total{command="curl"}': "10",
        'netwatchd_connect_attempts_total{command="ssh"}': "5",  # tie with wget: by name
        'netwatchd_connect_attempts_total{command="other"}': str(5 + 1 + 2 + 7),
    }
    assert s['netwatchd_connect_failed_total{command="curl"}'] == "1"
    assert s['netwatchd_connect_failed_total{command="ssh"}'] == "0"
    assert s['netwatchd_connect_failed_total{command="other"}'] == str(1 + 1 + 2)


def test_no_commands_still_exports_other_zero():
    s = samples(render(Snapshot(), 20))
    assert s['netwatchd_connect_attempts_total{command="other"}'] == "0"
    assert s["netwatchd_devices"] == "0"
    assert s['netwatchd_events_lost_total{path="connect"}'] == "0"
    assert s['netwatchd_events_lost_total{path="device"}'] == "0"


def test_every_alert_kind_is_exported_zeros_included():
    s = samples(render(Snapshot(alerts={sorted(KINDS)[0]: 4}), 20))
    for kind in KINDS:
        assert s[f'netwatchd_alerts_total{{kind="{kind}"}}'] == ("4" if kind == sorted(KINDS)[0] else "0")


def test_label_values_are_escaped():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    text = render(Snapshot(command_attempts={'we"ird\\x\n': 3}), 20)
    assert 'netwatchd_connect_attempts_total{command="we\\"ird\\\\x\\n"} 3' in text


def test_fdinfo_with_and_without_bpf_stats():
    with_stats = "pos:\t0\nflags:\t02000002\nprog_type:\t8\nprog_id:\t42\nrun_time_ns:\t123456\nrun_cnt:\t789\n"
    assert parse_fdinfo(with_stats) == (123456, 789)
    assert parse_fdinfo("pos:\t0\nprog_type:\t8\nprog_id:\t42\n") == (0, 0)


def test_read_bpf_stats_missing_fd_is_zero(tmp_path):
    (tmp_path / "7").write_text("run_time_ns:\t10\nrun_cnt:\t2\n")
    assert read_bpf_stats({"a": 7, "b": 8}, str(tmp_path)) == {"a": (10, 2), "b": (0, 0)}


# -- request parsing -------------------------------------------------------------------------------

def test_parse_head_request_line_path_and_query():
    method, path, query = parse_head(b"GET /api/list-connections?pid=12&limit=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (method, path, query) == ("GET", "/api/list-connections", {"pid": ["12"], "limit": ["3"]})
    assert parse_head(b"GET /api/connection-summary?command=my%20cmd HTTP/1.0\r\n\r\n")[2] == {"command": ["my cmd"]}


@pytest.mark.parametrize("head, status", [
    (b"GET /metrics\r\n\r\n", 400),
    (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
    (b"GET http://x/metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/connection-summary?command=%ff HTTP/1.1\r\n\r\n", 400),
])
def test_parse_head_rejects(head, status):
    with pytest.raises(BadRequest) as info:
        parse_head(head)
    assert info.value.status == status


class FakeConnects:
    """The connect queries (read_model.ConnectQueries) our JSON routes ask."""

    def __init__(self):
        self.calls = []

    def summary(self, pid, command, duration):
        from netwatchd.connects.queries import check_summary
        check_summary(pid, command, duration, 3600)
        self.calls.append((pid, command, duration))
        return {"total_attempts": 0, "message": "m"}

    def list_connections(self, pid, limit):
        from netwatchd.connects.queries import check_list
        check_list(pid, limit)
        return [], False


class FakeDaemon:
    """A fake of the read model the daemon hands its edges (netwatchd.read_model.ReadModel), and
    nothing deeper: its connect queries are FakeConnects'; one command, curl, made 3 connects,
    1 failed; 4 connect records lost; no devices, alerts off."""

    max_window_sec = 3600

    def __init__(self):
        self._connects = FakeConnects()
        self.cfg = parse_config("")

    def refresh(self):
        pass

    def summary(self, pid, command, duration_sec):
        return self._connects.summary(pid, command, duration_sec)

    def list_connections(self, pid, limit):
        return self._connects.list_connections(pid, limit)

    def list_per_process(self, pid, limit, keep):
        return {}, False

    def version(self):
        return "0.0.0"

    def started_at_usec(self):
        return 1_700_000_000_000_000

    def config_path(self):
        return "/etc/netwatchd/netwatchd.yaml"

    def programs_attached(self):
        return []

    def kernel_release(self):
        return "test"

    def kernel_fallbacks(self):
        return []

    def interfaces(self):
        return []

    def connect_attempts(self):
        return 3

    def device_count(self):
        return 0

    def events_lost(self):
        return EventsLost(connect=4, device=0)

    def malformed_frames(self):
        return 0

    def processes_untracked(self):
        return 0

    def handshakes_untracked(self):
        return 0

    def latency_samples_lost(self):
        return 0

    def dropped(self):
        return {"devices_evicted": 4904, "dns_answers_unsolicited": 2}

    def tick_time(self):
        return TickTime()

    def protocol_totals(self):
        return {}

    def device_summaries(self):
        return []

    def device_page(self, offset, limit):
        return [], 0

    def device(self, mac_or_ip):
        raise NoSuchDevice("device watching is disabled in the configuration (devices.enabled)")

    def alerts_enabled(self):
        return False

    def learning(self):
        return False

    def alert_counts(self):
        return {}

    def newest_alerts(self, limit):
        return []

    def alert_log(self):
        return []

    def tick_series(self, table, key):
        return {"time_usec": [], "value": [], "mean": [], "std": []}

    def tick_totals(self, since_usec=0):
        return {"time_usec": []}

    def command_totals(self):
        return {"curl": CommandTotals(attempts=3, failed=1)}

    def command_overflow(self):
        return CommandTotals()

    def latency_by_command(self):
        return {}

    def program_fds(self):
        return {}

    def beacon_pairs(self):
        return 0

    def beacon_pairs_dropped(self):
        return 0

    def host_identity(self):
        return HostIdentity("0123456789abcdef0123456789abcdef", "box", (("eth0", "192.0.2.0/24@02:00:00:00:00:01"),))

    def fleet_status(self):
        return FleetStatus()

    def add_alert_sink(self, sink):
        pass

    def add_pattern_listener(self, listener):
        pass

    def add_tick_listener(self, listener):
        pass


def test_the_fake_is_the_read_model_and_nothing_more():
    from tests.unit.test_read_model import public_members, read_model_members

    assert isinstance(FakeDaemon(), ReadModel)
    assert public_members(FakeDaemon()) == read_model_members()


def respond(target, method="GET"):
    return HttpApi(FakeDaemon(), FakeDaemon().cfg.metrics).respond(method, *parse_head(
        f"{method} {target} HTTP/1.1\r\n\r\n".encode())[1:])


def test_routes_status_codes():
    assert respond("/health") == (200, "application/json", b'{"status": "ok"}\n')
    assert respond("/nope")[0] == 404
    assert respond("/health", "POST")[0] == 405
    status, ctype, body = respond("/metrics")
    assert (status, ctype) == (200, "text/plain; version=0.0.4; charset=utf-8")
    s = samples(body.decode())
    assert s['netwatchd_connect_attempts_total{command="curl"}'] == "3"
    assert (s['netwatchd_dropped_total{what="devices_evicted"}'], s['netwatchd_dropped_total{what="dns_answers_unsolicited"}']) == ("4904", "2")
    assert s['netwatchd_connect_failed_total{command="curl"}'] == "1"
    assert s['netwatchd_events_lost_total{path="connect"}'] == "4"


@pytest.mark.parametrize("target, message", [
    ("/netwatchd/api/connection-summary?duration=60", "give a pid (non-zero) or a command name (non-empty)"),
    ("/netwatchd/api/connection-summary?pid=1&command=x", "give either a pid or a command, not both (pid=1, command='x')"),
    ("/netwatchd/api/connection-summary?pid=1&duration=0", "duration_sec must be between 1 and 3600, got 0"),
    ("/netwatchd/api/connection-summary?pid=abc", "pid must be an integer 0..4294967295, got 'abc'"),
    ("/netwatchd/api/connection-summary?pid=-1", "pid must be an integer 0..4294967295, got '-1'"),
    ("/netwatchd/api/connection-summary?pid=1&pid=2", "give pid at most once"),
    ("/netwatchd/api/list-connections?limit=1001", "limit must be at most 1000, got 1001"),
])
def test_bad_requests_get_400_with_the_query_message(target, message):
    status, ctype, body = respond(target)
    assert (status, ctype) == (400, "application/json")
    import json
    assert json.loads(body) == {"error": message}


def test_duration_defaults_and_alias():
    c = FakeConnects()
    connection_summary(c, {"pid": ["5"]})
    connection_summary(c, {"command": ["x"], "duration_seconds": ["7"]})
    assert c.calls == [(5, "", 60), (0, "x", 7)]
    with pytest.raises(InvalidQuery):
        connection_summary(c, {"pid": ["5"], "duration": ["1"], "duration_seconds": ["2"]})


# -- config ------------------------------------------------------------------------------------------

def test_metrics_config_defaults_off_on_loopback():
    cfg = parse_config("")
    assert (cfg.metrics.enabled, cfg.metrics.listen, cfg.metrics.top_commands) == (False, "127.0.0.1:9637", 20)
    assert split_listen("[::1]:80") == ("::1", 80)


@pytest.mark.parametrize("listen", ["9637", "localhost:9637", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000",
                                    "::1:9637", "[127.0.0.1]:9637", ":9637", "127.0.0.1:x"])
def test_bad_listen_addresses_are_config_errors(listen):
    with pytest.raises(ConfigError) as info:
        parse_config(f'metrics: {{listen: "{listen}"}}', "f.yaml")
    assert str(info.value).startswith("f.yaml: metrics.listen: ")


def test_beacon_alerts_and_the_pair_table_are_exported():
    s = samples(render(Snapshot(alerts={"beacon": 2}, beacon_pairs=1234, beacon_pairs_dropped=7), 20))
    assert s['netwatchd_alerts_total{kind="beacon"}'] == "2"
    assert s["netwatchd_beacon_pairs"] == "1234"
    assert s["netwatchd_beacon_pairs_dropped_total"] == "7"


def test_connect_latency_is_a_histogram_per_bounded_command():
    from netwatchd.connects.latency import by_command

    addr = b"\x0a\0\0\x02" + b"\0" * 12
    cells = {("curl", 2, addr, 443): {15: (3, 60_000), 16: (1, 40_000)}, ("wget", 2, addr, 80): {10: (2, 1_500)},
             ("ssh", 2, addr, 22): {1: (1, 1)}}
    snap = Snapshot(command_attempts={"curl": 4, "wget": 2, "ssh": 1}, latency=by_command(cells))
    s = samples(render(snap, 2))  # top 2 commands: curl, wget; ssh folds into other
    name = "netwatchd_connect_duration_seconds"
    assert s[f'{name}_bucket{{command="curl",le="0.016384"}}'] == "0"
    assert s[f'{name}_bucket{{command="curl",le="0.032768"}}'] == "3"
    assert s[f'{name}_bucket{{command="curl",le="0.065536"}}'] == "4"
    assert s[f'{name}_bucket{{command="curl",le="+Inf"}}'] == "4" and s[f'{name}_count{{command="curl"}}'] == "4"
    assert s[f'{name}_sum{{command="curl"}}'] == "0.1"
    assert s[f'{name}_count{{command="other"}}'] == "1" and s[f'{name}_count{{command="wget"}}'] == "2"
    assert not any('command="ssh"' in k for k in s)


def test_the_fleet_families_one_series_per_device():
    from netwatchd.read_model import FleetStatus, HostIdentity

    segment = "192.0.2.0/24@02:00:00:00:00:01"
    snap = Snapshot(identity=HostIdentity("0123456789abcdef0123456789abcdef", "box", (("eth0", segment),)),
                    version="0.1.0", devices_seen=[(segment, "00:16:3e:00:00:01", 'Xen "Inc"', 1_700_000_000.5)],
                    fleet=FleetStatus(True, 3, 2, 1, 9, (("http://am:9093", "connection refused", 4),)))
    lines = [line for line in render(snap, 20).splitlines() if not line.startswith("#")]
    assert 'netwatchd_host_info{host="0123456789abcdef0123456789abcdef",hostname="box",version="0.1.0"} 1' in lines
    assert 'netwatchd_segment_info{interface="eth0",segment="192.0.2.0/24@02:00:00:00:00:01"} 1' in lines
    assert ('netwatchd_device_info{segment="192.0.2.0/24@02:00:00:00:00:01",mac="00:16:3e:00:00:01",'
            'vendor="Xen \\"Inc\\""} 1') in lines
    assert ('netwatchd_device_last_seen_timestamp_seconds{segment="192.0.2.0/24@02:00:00:00:00:01",'
            'mac="00:16:3e:00:00:01"} 1700000000.5') in lines
    assert [line for line in lines if line.startswith("netwatchd_fleet_")] == [
        "netwatchd_fleet_spool_alerts 3", "netwatchd_fleet_alerts_firing 2",
        "netwatchd_fleet_spool_dropped_total 1", "netwatchd_fleet_alerts_delivered_total 9",
        'netwatchd_fleet_delivery_failures_total{alertmanager="http://am:9093",cause="connection refused"} 4']
