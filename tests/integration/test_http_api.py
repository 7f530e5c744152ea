"""The metrics listener against a real daemon: /health, /metrics, our JSON routes (/netwatchd/api/)
with exact counts, 400s with the D-Bus messages, and a real Prometheus scraping us."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.oracles import readme_alert_kinds
from tests.conftest import require_root_and_bcc, require_tools
from tests.support.daemon import DaemonProcess, PrivateSystemBus
from tests.support.processes import ConnectChild

pytestmark = pytest.mark.root

OK_CONNECTS = 5
REFUSED_CONNECTS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, path: str, timeout: float = 10):
    """(status, content type, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(base + path, timeout=timeout) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        with e:  # its connection closed
            return e.code, e.headers["Content-Type"], e.read().decode()


@pytest.fixture(scope="module")
def daemon(make_daemon):
    """About the metrics listener (metrics.enabled, metrics.listen on a free port), the commands
    /metrics lists (metrics.top_commands 1000: the child's command is listed however many other
    commands this shared host runs) and the records our JSON routes list
    (connections.recent_records: plenty, so the child's are still there on a busy host)."""
    port = free_port()
    d = make_daemon({"connections": {"recent_records": 200000},
                     "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}", "top_commands": 1000}},
                    about=("metrics.enabled", "metrics.listen", "metrics.top_commands", "connections.recent_records"))
    d.base = f"http://127.0.0.1:{port}"
    d.port = port
    return d


@pytest.fixture(scope="module")
def child(daemon):
    with ConnectChild(OK_CONNECTS, REFUSED_CONNECTS) as c:
        yield c


def test_health(daemon):
    assert get(daemon.base, "/health") == (200, "application/json", '{"status": "ok"}\n')


def test_connection_summary_by_pid_and_by_command(daemon, child):
    for query in (f"pid={child.pid}&duration=60", f"command={child.command}&duration=60"):
        status, ctype, body = get(daemon.base, "/netwatchd/api/connection-summary?" + query)
        assert (status, ctype) == (200, "application/json"), body
        answer = json.loads(body)
        assert answer["total_attempts"] == OK_CONNECTS + REFUSED_CONNECTS, answer
        assert (answer["succeeded"], answer["failed"], answer["in_progress"]) == (OK_CONNECTS, REFUSED_CONNECTS, 0)
        assert answer["duration"] == 60
        assert f"made {OK_CONNECTS + REFUSED_CONNECTS} connection attempts" in answer["message"]


def test_list_connections_grouped_by_pid(daemon, child):
    status, _, body = get(daemon.base, f"/netwatchd/api/list-connections?pid={child.pid}&limit=1000")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["total_pids"] == 1 and answer["truncated"] is False
    records = answer["connections"][str(child.pid)]
    assert len(records) == OK_CONNECTS + REFUSED_CONNECTS
    assert {r["port"] for r in records} == {child.port, child.closed_port}
    assert sum(1 for r in records if r["return_code"] == -111) == REFUSED_CONNECTS
    assert all(r["command"] == child.command and r["protocol"] == "TCP" for r in records)
    status, _, body = get(daemon.base, f"/netwatchd/api/list-connections?pid={child.pid}&limit=2")
    answer = json.loads(body)
    assert answer["truncated"] is True and len(answer["connections"][str(child.pid)]) == 2


@pytest.mark.parametrize("path, message", [
    ("/netwatchd/api/connection-summary?pid=1&command=x&duration=5", "give either a pid or a command, not both (pid=1, command='x')"),
    ("/netwatchd/api/connection-summary?pid=1&duration=3601", "duration_sec must be between 1 and 3600, got 3601"),
    ("/netwatchd/api/connection-summary?command=this-is-far-too-long", "command 'this-is-far-too-long' is longer than 15 bytes; the kernel keeps only the first 15"),
    ("/netwatchd/api/list-connections?limit=5000", "limit must be at most 1000, got 5000"),
    ("/netwatchd/api/list-connections?pid=x", "pid must be an integer 0..4294967295, got 'x'"),
])
def test_bad_requests_are_400_with_the_message(daemon, path, message):
    status, ctype, body = get(daemon.base, path)
    assert (status, ctype, json.loads(body)) == (400, "application/json", {"error": message})


def test_unknown_path_and_method(daemon):
    assert get(daemon.base, "/nope")[0] == 404
    # ebpf-server's paths are not ours: they have a listener of their own (ebpf_server_api)
    status, _, body = get(daemon.base, "/api/connection-summary?pid=1&duration=5")
    assert status == 404 and "ebpf-server's API is on ebpf_server_api.listen" in json.loads(body)["error"]
    req = urllib.request.Request(daemon.base + "/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 405


def test_oversized_and_silent_requests_do_not_hurt(daemon):
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10):
        pass  # opened and closed without a word
    assert get(daemon.base, "/health")[0] == 200


def test_metrics_exact_for_our_command(daemon, child):
    devices_before = daemon.get_property("DeviceCount")
    status, ctype, body = get(daemon.base, "/metrics")
    devices_after = daemon.get_property("DeviceCount")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    lines = body.splitlines()
    assert f'netwatchd_connect_attempts_total{{command="{child.command}"}} {OK_CONNECTS + REFUSED_CONNECTS}' in lines
    assert f'netwatchd_connect_failed_total{{command="{child.command}"}} {REFUSED_CONNECTS}' in lines
    # the device watcher runs as shipped (auto): the host's own devices, as D-Bus counts them
    (devices,) = [int(line.split()[1]) for line in lines if line.startswith("netwatchd_devices ")]
    assert devices_before <= devices <= devices_after
    assert 'netwatchd_events_lost_total{path="connect"} 0' in lines  # a quiet host loses nothing
    assert any(line.startswith('netwatchd_bpf_run_count_total{program="sys_exit_connect"} ') for line in lines)
    for kind in readme_alert_kinds():  # every kind listed, none raised on this quiet run
        assert f'netwatchd_alerts_total{{kind="{kind}"}} 0' in lines, kind


def test_listen_error_names_the_address():
    """metrics.enabled, metrics.listen on an address taken: the daemon says which and exits."""
    require_root_and_bcc()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    bus = PrivateSystemBus().start()  # its own: the module's daemon owns the name on the other
    d = DaemonProcess(bus, {"metrics": {"enabled": True, "listen": address}}, about=("metrics.enabled", "metrics.listen"))
    try:
        with pytest.raises(RuntimeError):
            d.start(timeout=60)
        assert f"netwatchd: metrics.listen: cannot listen on {address}: Address already in use" in d.log()
        assert d.proc.returncode == 1
    finally:
        d.cleanup()
        bus.stop()
        taken.close()


def test_a_real_prometheus_scrapes_us(daemon, child):
    require_tools("prometheus")
    devices_at_start = daemon.get_property("DeviceCount")  # devices are only ever added
    work = Path(tempfile.mkdtemp(prefix="nwd-prom-"))
    port = free_port()
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: netwatchd\n"
        "    scrape_interval: 1s\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{daemon.port}']}}]\n")
    log = open(work / "prometheus.log", "wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        query = urllib.parse.quote(f'netwatchd_connect_attempts_total{{command="{child.command}"}}')
        deadline = time.monotonic() + 90
        value = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, _, body = get(f"http://127.0.0.1:{port}", f"/api/v1/query?query={query}", timeout=5)
            except OSError:
                status, body = 0, ""
            if status == 200:
                result = json.loads(body)["data"]["result"]
                if result:
                    value = result[0]["value"][1]
                    break
            time.sleep(0.5)
        assert value == str(OK_CONNECTS + REFUSED_CONNECTS), (work / "prometheus.log").read_text()[-3000:]
        status, _, body = get(f"http://127.0.0.1:{port}", "/api/v1/query?query=netwatchd_devices")
        scraped = int(json.loads(body)["data"]["result"][0]["value"][1])
        assert devices_at_start <= scraped <= daemon.get_property("DeviceCount")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
