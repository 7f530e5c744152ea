"""Names a local user chooses cannot write to an operator's terminal (issue 21, part 6): a process
that named itself with terminal escapes (prctl(PR_SET_NAME), as any user may) and connects to a
127.0.0.1 port and to an abstract unix socket whose name holds ESC bytes. `netwatchctl
connections` shows both names escaped, Summary finds the process by its escaped name, and its
connect storm's connect_rate alert reaches journald (a private one, tests/support/journal.py)
with MESSAGE and NETWATCHD_* fields that are printable text. One daemon, shipped config with
the tick compressed; the expected strings are written out here."""
from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from tests.conftest import tool
from tests.support import wait_for
from tests.support.daemon import DaemonProcess

pytestmark = pytest.mark.root

TICK = 0.5
NAME = b"\x1b[31mRED\x1b[0m"  # 12 bytes: the kernel keeps all of it
SHOWN = r"\x1b[31mRED\x1b[0m"
STORM = 4000  # connect() calls at once: the README's scenario for connect_rate on a command

# The hostile process: names itself, connects once to each listener, then on "N" makes N refused
# connects as fast as it can and answers "burst N"; ends when stdin closes.
CHILD = r"""
import ctypes, socket, sys
name, port, abstract, closed = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
if ctypes.CDLL(None, use_errno=True).prctl(15, ctypes.c_char_p(name), 0, 0, 0) != 0:  # PR_SET_NAME
    sys.exit("prctl(PR_SET_NAME) failed")
s = socket.create_connection(("127.0.0.1", port))
s.close()
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
u.connect(b"\0" + abstract)
u.close()
print("connected", flush=True)
for line in sys.stdin:
    for _ in range(int(line)):
        c = socket.socket()
        c.connect_ex(("127.0.0.1", closed))
        c.close()
    print("burst", int(line), flush=True)
"""


def ctl(d: DaemonProcess, *args: str) -> bytes:
    r = subprocess.run([tool("netwatchctl"), *args], env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=d.bus.address),
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stderr) == (0, b""), r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def world(make_world):
    w = make_world("nwh", journal=True)
    abstract = b"nw\x1b[2J" + w.tag.encode()
    listener, unix, closed = socket.socket(), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        unix.bind(b"\0" + abstract)
        unix.listen(16)
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
        d = w.start_daemon({"tick_interval_sec": TICK})
        child = w.python(CHILD, NAME.hex(), listener.getsockname()[1], abstract.hex(), closed.getsockname()[1],
                         ready="connected")  # ends when its stdin closes
        yield d, w.journal, child, listener.getsockname()[1], r"@nw\x1b[2J" + w.tag
    finally:
        for s in (listener, unix, closed):
            s.close()


def test_connections_show_the_name_and_the_unix_path_escaped(world):
    d, _, child, port, unix_shown = world
    wait_for(lambda: len(json.loads(ctl(d, "--json", "connections", "--pid", str(child.pid)))["connections"]) >= 2,
             what="the child's two connect records", timeout=15)
    out = ctl(d, "connections", "--pid", str(child.pid))
    assert b"\x1b" not in out
    rows = [line.split() for line in out.decode().splitlines()[1:]]
    assert sorted((r[2], r[3], r[5], r[6], r[7], r[-1]) for r in rows) == [
        (str(child.pid), SHOWN, "connect", "other", unix_shown, "succeeded"),
        (str(child.pid), SHOWN, "connect", "tcp", f"127.0.0.1:{port}", "succeeded"),
    ]
    (record,) = [r for r in json.loads(ctl(d, "--json", "connections", "--pid", str(child.pid)))["connections"]
                 if r["family"] == "unix"]
    assert (record["command"], record["destination"]) == (SHOWN, unix_shown)


def test_summary_finds_the_process_by_its_escaped_name(world):
    d, _, child, _, _ = world
    # as a shell passes '\x1b[31mRED\x1b[0m' (single quotes): the name as netwatchctl shows it
    wait_for(lambda: json.loads(ctl(d, "--json", "summary", "--command", SHOWN))["total_attempts"] >= 2,
             what="Summary counting the child's connects", timeout=15)
    answer = json.loads(ctl(d, "--json", "summary", "--command", SHOWN))
    assert (answer["command"], answer["total_attempts"], answer["succeeded"]) == (SHOWN, 2, 2)
    out = ctl(d, "summary", "--command", SHOWN)
    assert out.startswith(rb"command '\x1b[31mRED\x1b[0m' made 2 connection attempts in the last 60 s: "
                          rb"2 succeeded, 0 failed")
    by_pid = json.loads(ctl(d, "--json", "summary", "--pid", str(child.pid)))
    assert by_pid["commands"] == [SHOWN]


def test_the_storm_alert_reaches_the_journal_as_printable_text(world):
    d, journal, child, _, _ = world
    child.ask(str(STORM), f"burst {STORM}", timeout=60)
    subject = "command:" + SHOWN
    (entry,) = wait_for(lambda: [e for e in journal.entries("NETWATCHD_KIND=connect_rate")
                                 if e.get("NETWATCHD_SUBJECT") == subject], what=f"a connect_rate alert on {subject}",
                          timeout=15)
    assert entry["NETWATCHD_COMMAND"] == SHOWN
    assert entry["NETWATCHD_PIDS"] == str(child.pid)
    assert entry["MESSAGE"].startswith(f"command {SHOWN} ")
    ours = {k: v for k, v in entry.items() if k == "MESSAGE" or k.startswith("NETWATCHD_")}
    # journalctl -o json gives a field with control bytes as an array of numbers, not a string
    assert all(isinstance(v, str) and v.isprintable() for v in ours.values()), ours
    assert b"\x1b" not in journal.journalctl("-o", "cat", "SYSLOG_IDENTIFIER=netwatchd").stdout.encode()
    alerts = ctl(d, "alerts")
    assert b"\x1b" not in alerts and f"connect_rate  {subject}".encode() in alerts
