"""The connect path against the real kernel: real BPF programs, real sockets, exact answers.

A child process with a unique command name makes known calls and reports what each returned;
the probe's Summary and ListConnections must equal that ground truth exactly.
"""
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netwatchd.config import ConnectionsConfig
from netwatchd.connects.monitor import ConnectMonitor
from tests.conftest import require_root_and_bcc

pytestmark = pytest.mark.root

CHILD = r'''
import errno, json, os, select, socket, sys
plan = json.loads(sys.argv[1])
truth = []
def connect(kind, fam, typ, addr, blocking=True):
    s = socket.socket(fam, typ)
    s.setblocking(blocking)
    rc = s.connect_ex(addr)
    final = rc
    if rc == errno.EINPROGRESS:  # how it ended, as a non-blocking client learns it
        select.select([], [s], [], 5)
        final = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    truth.append({"call": kind, "return_code": -rc if rc else 0, "final": -final if final else 0})
    return s
keep = []
keep.append(connect("tcp_accepted", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", plan["tcp4"])))
keep.append(connect("tcp_refused", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", plan["closed"])))
keep.append(connect("udp_connect", socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", plan["udp"])))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"x", ("127.0.0.1", plan["udp"]))
truth.append({"call": "udp_send", "return_code": 0, "final": 0})
keep.append(connect("tcp6_accepted", socket.AF_INET6, socket.SOCK_STREAM, ("::1", plan["tcp6"])))
keep.append(connect("unix_stream", socket.AF_UNIX, socket.SOCK_STREAM, plan["unix"]))
keep.append(connect("tcp_nonblocking", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", plan["tcp4"]), blocking=False))
print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "truth": truth}))
'''

# what each call must look like in ListConnections: (kind, family, transport, destination, port key)
EXPECTED_SHAPE = {
    "tcp_accepted": ("connect", "inet", "tcp", "127.0.0.1", "tcp4"),
    "tcp_refused": ("connect", "inet", "tcp", "127.0.0.1", "closed"),
    "udp_connect": ("connect", "inet", "udp", "127.0.0.1", "udp"),
    "udp_send": ("udp_send", "inet", "udp", "127.0.0.1", "udp"),
    "tcp6_accepted": ("connect", "inet6", "tcp", "::1", "tcp6"),
    "unix_stream": ("connect", "unix", "other", None, None),
    "tcp_nonblocking": ("connect", "inet", "tcp", "127.0.0.1", "tcp4"),
}


class Probe:
    """A ConnectProbe and its engine, in this process, stopped however the test ends."""

    def __init__(self, **settings):
        from netwatchd.kernel.connect_probe import ConnectProbe

        self.cfg = ConnectionsConfig(**settings)
        self.probe = ConnectProbe(self.cfg)
        self.probe.start()
        self.monitor = ConnectMonitor(self.probe, self.cfg)

    def close(self):
        self.probe.stop()


@pytest.fixture(scope="module")
def probe():
    require_root_and_bcc()
    p = Probe()
    yield p
    p.close()


@pytest.fixture
def unique_python(tmp_path):
    """A copy of the interpreter under a name no other process on the host has."""
    name = "nwt" + secrets.token_hex(5)
    path = tmp_path / name
    shutil.copy(os.path.realpath(sys.executable), path)
    return name, str(path)


class Servers:
    def __init__(self, tmp: Path):
        self.tcp4 = socket.create_server(("127.0.0.1", 0))
        self.tcp6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.closed = socket.socket()  # bound, never listening: connects are refused
        self.closed.bind(("127.0.0.1", 0))
        self.unix_path = str(tmp / "nw.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        self.unix.listen(8)

    def plan(self):
        return {
            "tcp4": self.tcp4.getsockname()[1],
            "tcp6": self.tcp6.getsockname()[1],
            "udp": self.udp.getsockname()[1],
            "closed": self.closed.getsockname()[1],
            "unix": self.unix_path,
        }

    def close(self):
        for s in (self.tcp4, self.tcp6, self.udp, self.closed, self.unix):
            s.close()


def run_child(python, plan):
    out = subprocess.run([python, "-c", CHILD, json.dumps(plan)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_known_connects_are_counted_and_listed_exactly(probe, unique_python, tmp_path):
    name, python = unique_python
    servers = Servers(tmp_path)
    try:
        plan = servers.plan()
        child = run_child(python, plan)
    finally:
        servers.close()
    truth = child["truth"]
    connects = [t for t in truth if t["call"] != "udp_send"]
    succeeded = sum(1 for t in connects if t["final"] == 0)
    failed = len(connects) - succeeded
    assert failed == 1  # the refused one
    assert any(t["return_code"] == -111 for t in truth) and any(t["return_code"] == -115 for t in truth)

    probe.monitor.refresh()  # what the D-Bus edge does before it answers
    for by in ({"pid": child["pid"], "command": ""}, {"pid": 0, "command": name}):
        s = probe.monitor.summary(by["pid"], by["command"], 60)
        # each connect once, under its final outcome: the non-blocking one succeeded
        assert (s["total_attempts"], s["succeeded"], s["failed"], s["refused"], s["in_progress"], s["unknown"],
                s["udp_sends"]) == (len(connects), succeeded, failed, 1, 0, 0, 1), s["message"]
        assert s["latency_samples"] == 3 and 0 < s["latency_p50_usec"] < 1_000_000  # the accepted TCP ones

    records, truncated = probe.monitor.list_connections(child["pid"], 0)
    assert not truncated
    assert len(records) == len(truth)
    for record, call in zip(records, reversed(truth)):  # newest first
        kind, family, transport, destination, port_key = EXPECTED_SHAPE[call["call"]]
        assert (record["kind"], record["family"], record["transport"]) == (kind, family, transport), call
        assert record["destination"] == (destination if destination else plan["unix"]), call
        assert record["port"] == (plan[port_key] if port_key else 0), call
        assert record["return_code"] == call["return_code"], call
        final = {0: "succeeded", -111: "refused"}[call["final"]]
        assert record["outcome"] == ("sent" if kind == "udp_send" else final), call
        assert record["end_error"] == ("ECONNREFUSED" if call["final"] == -111 else ""), call
        assert (record["latency_usec"] > 0) == (transport == "tcp"), call  # SYN sent -> established/refused
        assert (record["command"], record["uid"], record["pid"]) == (name, child["uid"], child["pid"])
    assert records[-1]["timestamp_usec"] <= records[0]["timestamp_usec"]

    top, truncated = probe.monitor.list_connections(child["pid"], 3)
    assert truncated and [r["return_code"] for r in top] == [r["return_code"] for r in records[:3]]


def test_a_command_that_never_connected_has_an_empty_answer(probe):
    s = probe.monitor.summary(0, "nw-never-ran", 60)
    assert s["total_attempts"] == 0
    assert s["message"] == ("command 'nw-never-ran' made 0 connection attempts in the last 60 s: 0 succeeded, "
                            "0 failed (0 refused, 0 timed out, 0 other), 0 in progress")


LOAD_WORKER = r'''
import json, os, socket, struct, sys
ok_port, refused_port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
linger = struct.pack("ii", 1, 0)
ok = failed = 0
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    if s.connect_ex(("127.0.0.1", ok_port if i % 2 == 0 else refused_port)) == 0:
        ok += 1
    else:
        failed += 1
    s.close()
print(json.dumps({"pid": os.getpid(), "succeeded": ok, "failed": failed}))
'''

ACCEPTOR = r'''
import socket, sys
srv = socket.socket(fileno=int(sys.argv[1]))
while True:
    c, _ = srv.accept()
    c.close()
'''


def test_counts_stay_exact_under_load_even_when_records_are_lost(unique_python):
    """≥200k connects from 4 processes at full speed through a deliberately tiny ring buffer:
    records are lost (and counted), per-process counts are exact anyway."""
    require_root_and_bcc()
    name, python = unique_python
    small = Probe(ring_buffer_kib=16)
    srv = socket.create_server(("127.0.0.1", 0), backlog=4096)
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    acceptors, workers = [], []
    try:
        for _ in range(2):
            acceptors.append(subprocess.Popen([sys.executable, "-c", ACCEPTOR, str(srv.fileno())], pass_fds=[srv.fileno()]))
        per_worker = 50_000
        for _ in range(4):
            workers.append(subprocess.Popen(
                [python, "-c", LOAD_WORKER, str(srv.getsockname()[1]), str(refused.getsockname()[1]), str(per_worker)],
                stdout=subprocess.PIPE, text=True,
            ))
        results = []
        for w in workers:
            out, _ = w.communicate(timeout=300)
            results.append(json.loads(out))
        small.monitor.refresh()
        for r in results:
            s = small.monitor.summary(r["pid"], "", 3600)
            assert (s["total_attempts"], s["succeeded"], s["failed"]) == (per_worker, r["succeeded"], r["failed"]), r
        by_command = small.monitor.summary(0, name, 3600)
        assert by_command["total_attempts"] == 4 * per_worker
        assert by_command["succeeded"] == sum(r["succeeded"] for r in results)
        small.monitor.poll()
        assert small.monitor.events_lost() > 0, "a 16 KiB ring should have overflowed"
    finally:
        for p in workers + acceptors:
            if p.poll() is None:
                p.kill()
            p.wait()
        srv.close()
        refused.close()
        small.close()


EXEC_CHILD = r'''
import os, socket, sys
port, n, then = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
for _ in range(n):
    socket.create_connection(("127.0.0.1", port)).close()
print(os.getpid(), flush=True)
if then:
    os.execv(then[0], then)
'''


def test_exec_splits_counts_between_the_old_and_the_new_command(probe, tmp_path):
    """A process connects 3 times as one command, execs another that connects 5 times: each
    name gets its own, the pid gets both."""
    names = ["nwa" + secrets.token_hex(5), "nwb" + secrets.token_hex(5)]
    paths = []
    for name in names:
        paths.append(str(tmp_path / name))
        shutil.copy(os.path.realpath(sys.executable), paths[-1])
    srv = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        port = str(srv.getsockname()[1])
        out = subprocess.run(
            [paths[0], "-c", EXEC_CHILD, port, "3", paths[1], "-c", EXEC_CHILD, port, "5"],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        srv.close()
    assert out.returncode == 0, out.stderr
    pid_before, pid_after = map(int, out.stdout.split())
    assert pid_before == pid_after
    probe.monitor.refresh()
    assert probe.monitor.summary(0, names[0], 60)["total_attempts"] == 3
    assert probe.monitor.summary(0, names[1], 60)["total_attempts"] == 5
    by_pid = probe.monitor.summary(pid_before, "", 60)
    assert by_pid["total_attempts"] == 8 and by_pid["commands"] == sorted(names)
