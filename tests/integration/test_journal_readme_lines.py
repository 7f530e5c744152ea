"""The README's `journalctl` lines ("Alerts in the journal"), run as written against a journald
of the test's own (tests/support/journal.py) holding real alerts of a real daemon: a device on a
namespace LAN scans 300 ports (fan_out), a local command named `curl` makes 4000 connect() calls
in a fraction of a second (connect_rate, command:curl), a device joins after the learning period
(new_device, priority notice: below `-p warning`). The catalog is installed as make install
does, so `-x` explains.

The config is the shipped one with time compressed (the shipped 1 s tick, a 3 s learning period), and
devices.interfaces lists the LAN's ports: the host's own interfaces carry other people's
devices, whose alerts would be in these answers too.
"""
from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
from pathlib import Path
from typing import List

import pytest

from tests.support.daemon import unvariant

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "systemd" / "netwatchd.catalog"
TICK = 1.0  # as shipped: a storm on a loaded machine still makes 1000+ connects a tick
LEARNING_SEC = 3
SCAN_PORTS = 300

# Runs in the scanning namespace: one non-blocking TCP connect to each of N closed ports of a
# host (each answered by a RST), all within a few milliseconds.
SCAN = r"""
import socket, sys, time
host, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for port in range(first, first + n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, port))
    socks.append(s)
time.sleep(0.5)
print(len(socks))
"""

# Runs as `curl` (a symlink to the interpreter: its comm is "curl"): N refused connects.
STORM = r"""
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if s.connect_ex(("127.0.0.1", port)) != 111:
        sys.exit("not refused")
    s.close()
print("done")
"""


def readme_journalctl_lines() -> List[List[str]]:
    """The command lines of the README's "Alerts in the journal", without their comments."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Alerts in the journal", 1)[1].split("\n### ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith("    journalctl")]
    return [shlex.split(re.split(r"\s+#", line, maxsplit=1)[0]) for line in lines]


def catalog_subject(message_id: str, subject: str) -> str:
    """The catalog's Subject line for that MESSAGE_ID, as `journalctl -x` fills it in."""
    entry = CATALOG.read_text().split(f"-- {message_id}\n", 1)[1]
    line = entry.splitlines()[0]
    assert line.startswith("Subject: "), line
    return line.replace("@NETWATCHD_SUBJECT@", subject)


@pytest.fixture(scope="module")
def world(make_world):
    w = make_world("nwj", journal=True)
    journal = w.journal
    journal.install_catalog(CATALOG)
    scan = w.lan.add_node("scan", "00:50:56:5c:33:01")
    srv = w.lan.add_node("srv", "00:1b:21:5c:33:02")
    late = w.lan.add_node("late", "b8:27:eb:5c:33:03", down=True)  # unplugged until learning is over
    d = w.start_daemon({"tick_interval_sec": TICK, "alerts": {"learning_period_sec": LEARNING_SEC},
                        "devices": {"interfaces": w.lan.ports(), "store_interval_sec": 0.5}},
                       about=("devices.interfaces",))
    # scan and srv are seen while learning (on a slow start, perhaps only after it: then they
    # are new_device alerts too, which change nothing below)
    w.lan.send_udp(scan, [f"{srv.ipv4}:9"], 1)
    w.lan.send_udp(srv, [f"{scan.ipv4}:9"], 1)
    w.wait(lambda: not d.get_property("Learning"), LEARNING_SEC + 10, "the end of learning", interval=TICK)
    w.lan.ns(late, "ip", "link", "set", "eth0", "up")
    w.lan.send_udp(late, [f"{srv.ipv4}:9"], 1)
    assert int(w.lan.python(scan, SCAN, srv.ipv4, "20000", str(SCAN_PORTS))) == SCAN_PORTS
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: every connect is refused
        storm = subprocess.run([w.link("curl"), "-c", STORM, str(closed.getsockname()[1]), "4000"],
                               capture_output=True, text=True, timeout=60)
    assert storm.stdout.strip() == "done", storm.stderr

    def ours():
        alerts = [unvariant(a) for a in d.call("ListAlerts", "u", 0)[0]]
        # connect tracing is host-wide: other people's commands may alert too; not ours to judge
        alerts = [a for a in alerts if not a["subject"].startswith("command:") or a["subject"] == "command:curl"]
        kinds = sorted((a["kind"], a["subject"]) for a in alerts if a["kind"] != "new_device")
        new = {a["subject"] for a in alerts if a["kind"] == "new_device"}
        if kinds == sorted([("fan_out", f"device:{scan.mac}"), ("connect_rate", "command:curl")]) \
                and f"device:{late.mac}" in new:
            assert new <= {f"device:{n.mac}" for n in (scan, srv, late)}, new
            return alerts
    alerts = w.wait(ours, 10, "fan_out on the scanner, connect_rate on curl, new_device for late", interval=TICK)
    journal.wait_for("SYSLOG_IDENTIFIER=netwatchd", "NETWATCHD_KIND=connect_rate")
    journal.wait_for("SYSLOG_IDENTIFIER=netwatchd", "NETWATCHD_KIND=fan_out")
    journal.wait_for("SYSLOG_IDENTIFIER=netwatchd", "NETWATCHD_KIND=new_device")
    return {"journal": journal, "alerts": {a["kind"]: a for a in alerts if a["kind"] != "new_device"},
            "new_devices": [a for a in alerts if a["kind"] == "new_device"], "daemon": d}


def test_the_readme_has_the_three_lines():
    assert readme_journalctl_lines() == [
        ["journalctl", "-x", "-t", "netwatchd", "-p", "warning"],
        ["journalctl", "MESSAGE_ID=1b4bb667acef4d14b880d00c9cb6cfd7"],
        ["journalctl", "-o", "json", "NETWATCHD_SUBJECT=command:curl"],
    ]


def run_readme_line(world, index: int) -> str:
    r = world["journal"].run(*readme_journalctl_lines()[index])
    return r.stdout


def test_warning_and_worse_explained(world):
    """`journalctl -x -t netwatchd -p warning`: both alerts (fan_out is err, connect_rate
    warning), each followed by its catalog explanation; nothing of the daemon's info lines."""
    out = run_readme_line(world, 0)
    for kind, message_id in (("fan_out", "1b4bb667acef4d14b880d00c9cb6cfd7"),
                             ("connect_rate", "f737e7d8e9bb42de99b82a59c42f0dd1")):
        alert = world["alerts"][kind]
        assert out.count(f": {alert['message']}\n") == 1, out
        assert catalog_subject(message_id, alert["subject"]) in out, out
    assert " ready: " not in out and "watching devices on" not in out, out
    assert world["new_devices"] and not any(a["message"] in out for a in world["new_devices"]), out


def test_every_scan_like_fan_out(world):
    """`journalctl MESSAGE_ID=<fan_out>`: exactly the one fan_out entry (not the connect_rate,
    not the new_device ones)."""
    lines = [line for line in run_readme_line(world, 1).splitlines() if line and not line.startswith("-- ")]
    assert len(lines) == 1 and lines[0].endswith(f": {world['alerts']['fan_out']['message']}"), lines


def test_one_subjects_alerts_every_field(world):
    """`journalctl -o json NETWATCHD_SUBJECT=command:curl`: the one connect_rate alert, with the
    README's MESSAGE_ID and PRIORITY and the fields ListAlerts gave."""
    entries = [json.loads(line) for line in run_readme_line(world, 2).splitlines() if line.strip()]
    alert = world["alerts"]["connect_rate"]
    assert len(entries) == 1, entries
    (e,) = entries
    assert {k: e[k] for k in ("MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "NETWATCHD_KIND", "NETWATCHD_SUBJECT",
                              "NETWATCHD_ALERT_ID", "NETWATCHD_COMMAND")} == {
        "MESSAGE_ID": "f737e7d8e9bb42de99b82a59c42f0dd1", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "netwatchd",
        "NETWATCHD_KIND": "connect_rate", "NETWATCHD_SUBJECT": "command:curl", "NETWATCHD_ALERT_ID": alert["id"],
        "NETWATCHD_COMMAND": "curl"}
    assert e["MESSAGE"] == alert["message"]
    assert float(e["NETWATCHD_OBSERVED"]) == alert["observed"] >= 1000
    assert e["NETWATCHD_PIDS"] == alert["details"]["pids"] and e["NETWATCHD_FAILED"] == alert["details"]["failed"]
