"""README claims about the metrics listener (metrics.enabled, metrics.listen), against a real
daemon: an IPv6 listen address ([::1]:port) serves /metrics and /health;
`netwatchd_bpf_run_count_total` / `_run_time_seconds_total` count with
`sysctl kernel.bpf_stats_enabled=1` (the old value restored); a reload that changes
metrics.listen names it as a restart-only change and the listener stays where it was.
"""
from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import ConnectChild

pytestmark = pytest.mark.root

BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def free_port6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def get(base: str, path: str):
    try:
        with urllib.request.urlopen(base + path, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        with e:  # its connection closed
            return e.code, e.read().decode()


def sample(body: str, name: str, program: str) -> float:
    (value,) = [float(line.split()[-1]) for line in body.splitlines()
                if line.startswith(f'{name}{{program="{program}"}} ')]
    return value


@pytest.fixture(scope="module")
def daemon(make_daemon):
    """About metrics.enabled and metrics.listen: on, at an IPv6 loopback address."""
    port = free_port6()
    config = {"tick_interval_sec": 0.2, "metrics": {"enabled": True, "listen": f"[::1]:{port}"}}
    d = make_daemon(config, about=("metrics.enabled", "metrics.listen"))
    d.port = port
    d.base = f"http://[::1]:{port}"
    d.metrics_config = config
    return d


def test_metrics_listen_on_an_ipv6_address_serves_metrics_and_health(daemon):
    with ConnectChild(4, 2) as child:
        status, body = get(daemon.base, "/metrics")
    assert status == 200
    assert f'netwatchd_connect_attempts_total{{command="{child.command}"}} 6' in body.splitlines()
    assert f'netwatchd_connect_failed_total{{command="{child.command}"}} 2' in body.splitlines()
    # the 4 accepted handshakes' latency, from the kernel's log2 histogram (loopback: under 1 s)
    name, label = "netwatchd_connect_duration_seconds", f'command="{child.command}"'
    assert f'{name}_count{{{label}}} 4' in body.splitlines()
    assert f'{name}_bucket{{{label},le="+Inf"}} 4' in body.splitlines()
    assert f'{name}_bucket{{{label},le="1.048576"}} 4' in body.splitlines()
    assert f'{name}_bucket{{{label},le="1e-06"}} 0' in body.splitlines()
    (total,) = [float(line.split()[-1]) for line in body.splitlines() if line.startswith(f"{name}_sum{{{label}}} ")]
    assert 0 < total < 4.0
    status, body = get(daemon.base, "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_bpf_stats_count_runs_with_the_sysctl_on(daemon):
    """With kernel.bpf_stats_enabled=1, sys_exit_connect's run count grows by at least the
    connects our child made (other processes on the host connect too) and its run time grows;
    the sysctl is restored to what it was."""
    old = BPF_STATS.read_text().strip()
    try:
        BPF_STATS.write_text("1")
        _, first = get(daemon.base, "/metrics")
        with ConnectChild(30, 20):
            pass
        _, second = get(daemon.base, "/metrics")
    finally:
        BPF_STATS.write_text(old)
    assert BPF_STATS.read_text().strip() == old
    runs = [sample(b, "netwatchd_bpf_run_count_total", "sys_exit_connect") for b in (first, second)]
    times = [sample(b, "netwatchd_bpf_run_time_seconds_total", "sys_exit_connect") for b in (first, second)]
    assert runs[1] - runs[0] >= 50, runs
    assert times[1] > times[0], times
    # the cgroup connect hook ran for them too (records are on by default)
    assert sample(second, "netwatchd_bpf_run_count_total", "nw_connect4") >= 50


def test_a_reload_changing_metrics_listen_names_it_restart_only(daemon):
    new_port = free_port6()
    config = {**daemon.metrics_config, "metrics": {"enabled": True, "listen": f"[::1]:{new_port}"}}
    daemon.reload(config)
    daemon.wait_log("changed settings that take effect on restart: metrics.listen")
    assert re.search(r"changed settings that take effect on restart: metrics\.listen$", daemon.log(), re.M), daemon.log()
    assert get(daemon.base, "/health")[0] == 200  # still where it started
    with pytest.raises(OSError):
        socket.create_connection(("::1", new_port), timeout=2).close()
