"""Alerts in a real journald (started by the test in a mount namespace of its own, see
tests/support/journal.py): JournalSink's entries read back with `journalctl -o json`, every field
there; and `journalctl -x` explaining them from systemd/netwatchd.catalog, installed as make
install does (copied into the catalog directory, then `journalctl --update-catalog`)."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from netwatchd.alerting.alerts import Alert
from tests.conftest import require_root_and_bcc, require_tools, requires
from tests.support.daemon import DaemonProcess
from tests.support.journal import JOURNALD, PrivateJournal
from netwatchd.alerting.alerts import AlertIds
from netwatchd.alerting.beacons import Beacon, beacon_alert
from tests.support.oracles import readme_alert_kinds
from tests.unit.test_journal_catalog import parse_catalog

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "systemd" / "netwatchd.catalog"

ALERTS = [
    Alert("65b-1", "new_device", "device:00:16:3e:00:00:03", 1_700_000_000_000_001,
          "new device 00:16:3e:00:00:03 (Xensource, Inc.) on eth0, 10.0.0.3", observed=1,
          details={"mac": "00:16:3e:00:00:03", "vendor": "Xensource, Inc.", "randomized": "false", "interface": "eth0"}),
    Alert("65b-2", "address_change", "ip:10.0.0.5", 1_700_000_000_000_002,
          "flip flop: 10.0.0.5 went back from 00:16:3e:00:00:05 to 00:16:3e:00:00:06",
          details={"ip": "10.0.0.5", "old_mac": "00:16:3e:00:00:05", "new_mac": "00:16:3e:00:00:06",
                   "flip_flop": "true"}),
    Alert("65b-3", "connect_rate", "command:nwstorm", 1_700_000_000_000_003,
          "command nwstorm made 5000 connect() calls in a tick (normal 3.5, score 83.2)", observed=5000,
          baseline=3.5, score=83.25, details={"command": "nwstorm", "failed": "4990", "pids": "4242 4243"}),
    Alert("65b-4", "fan_out", "device:00:16:3e:00:00:0a", 1_700_000_000_000_004,
          "device 00:16:3e:00:00:0a reached 997 new ports and 1 new peers in a tick", observed=997,
          baseline=0.4, score=166.1, details={"mac": "00:16:3e:00:00:0a", "new_ports": "997", "new_peers": "1"}),
    beacon_alert(Beacon("command:nwbeacon", "2001:db8::7", 443, "c2.example", 30.1, 2.4, -0.05, 24, 0.931),
                 AlertIds(1_700_000_000_000_000), 1_700_000_000_000_005),
]

# What each entry must carry, written out by hand from the README ("Alerts in the journal" and
# its table of MESSAGE_IDs and PRIORITYs), not computed by the code under test.
EXPECTED = {
    "new_device": {
        "MESSAGE_ID": "4703ce0acd5240cbb57e9708c958357a", "PRIORITY": "5", "SYSLOG_IDENTIFIER": "netwatchd",
        "NETWATCHD_ALERT_ID": "65b-1", "NETWATCHD_KIND": "new_device", "NETWATCHD_SUBJECT": "device:00:16:3e:00:00:03",
        "NETWATCHD_OBSERVED": "1", "NETWATCHD_BASELINE": "0", "NETWATCHD_SCORE": "0",
        "NETWATCHD_MAC": "00:16:3e:00:00:03", "NETWATCHD_VENDOR": "Xensource, Inc.", "NETWATCHD_RANDOMIZED": "false",
        "NETWATCHD_INTERFACE": "eth0"},
    "address_change": {
        "MESSAGE_ID": "8cda3aa23ac6453da62310ac7c216a92", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "netwatchd",
        "NETWATCHD_ALERT_ID": "65b-2", "NETWATCHD_KIND": "address_change", "NETWATCHD_SUBJECT": "ip:10.0.0.5",
        "NETWATCHD_OBSERVED": "0", "NETWATCHD_BASELINE": "0", "NETWATCHD_SCORE": "0",
        "NETWATCHD_IP": "10.0.0.5", "NETWATCHD_OLD_MAC": "00:16:3e:00:00:05", "NETWATCHD_NEW_MAC": "00:16:3e:00:00:06",
        "NETWATCHD_FLIP_FLOP": "true"},
    "connect_rate": {
        "MESSAGE_ID": "f737e7d8e9bb42de99b82a59c42f0dd1", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "netwatchd",
        "NETWATCHD_ALERT_ID": "65b-3", "NETWATCHD_KIND": "connect_rate", "NETWATCHD_SUBJECT": "command:nwstorm",
        "NETWATCHD_OBSERVED": "5000", "NETWATCHD_BASELINE": "3.5", "NETWATCHD_SCORE": "83.25",
        "NETWATCHD_COMMAND": "nwstorm", "NETWATCHD_FAILED": "4990", "NETWATCHD_PIDS": "4242 4243"},
    "fan_out": {
        "MESSAGE_ID": "1b4bb667acef4d14b880d00c9cb6cfd7", "PRIORITY": "3", "SYSLOG_IDENTIFIER": "netwatchd",
        "NETWATCHD_ALERT_ID": "65b-4", "NETWATCHD_KIND": "fan_out", "NETWATCHD_SUBJECT": "device:00:16:3e:00:00:0a",
        "NETWATCHD_OBSERVED": "997", "NETWATCHD_BASELINE": "0.4", "NETWATCHD_SCORE": "166.1",
        "NETWATCHD_MAC": "00:16:3e:00:00:0a", "NETWATCHD_NEW_PORTS": "997", "NETWATCHD_NEW_PEERS": "1"},
    "beacon": {  # observed = connections, baseline = period (README "Beacons")
        "MESSAGE_ID": "faa2a1af520c4085acc397e93eb70cec", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "netwatchd",
        "NETWATCHD_ALERT_ID": "6553f100-1", "NETWATCHD_KIND": "beacon", "NETWATCHD_SUBJECT": "command:nwbeacon",
        "NETWATCHD_OBSERVED": "24", "NETWATCHD_BASELINE": "30.1", "NETWATCHD_SCORE": "0.931",
        "NETWATCHD_DESTINATION": "[2001:db8::7]:443", "NETWATCHD_ADDRESS": "2001:db8::7", "NETWATCHD_PORT": "443",
        "NETWATCHD_NAME": "c2.example", "NETWATCHD_PERIOD_SEC": "30.100", "NETWATCHD_JITTER_SEC": "2.400",
        "NETWATCHD_SKEW": "-0.050", "NETWATCHD_COUNT": "24", "NETWATCHD_COMMAND": "nwbeacon"},
}

# Runs inside the namespace: the sink as the daemon uses it, on the standard socket path.
EMIT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from netwatchd.alerting.alerts import Alert
from netwatchd.api.journal import JournalSink
sink = JournalSink()
for d in json.loads(sys.argv[2]):
    sink.emit(Alert.from_dict(d))
"""


@pytest.fixture(scope="module")
def journal():
    requires(os.geteuid() == 0, "needs root (mount namespace, journald)")
    require_tools("unshare", "nsenter", "journalctl")
    requires(os.path.exists(JOURNALD), f"needs {JOURNALD}")
    with PrivateJournal() as j:
        j.install_catalog(CATALOG)
        r = j.run(sys.executable, "-c", EMIT, str(REPO), json.dumps([a.to_dict() for a in ALERTS]), check=False)
        assert (r.returncode, r.stderr) == (0, ""), r.stderr  # nothing fell back to stderr
        yield j


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a.kind)
def test_entry_has_every_field(journal, alert):
    expected = EXPECTED[alert.kind]
    assert readme_alert_kinds()[alert.kind] == (expected["MESSAGE_ID"], int(expected["PRIORITY"]))
    (entry,) = journal.wait_for(f"MESSAGE_ID={expected['MESSAGE_ID']}")
    assert {k: entry.get(k) for k in expected} == expected
    assert entry["MESSAGE"] == alert.message
    assert sorted(k for k in entry if k.startswith("NETWATCHD_")) == sorted(k for k in expected if k.startswith("NETWATCHD_"))


def test_entries_can_be_found_by_netwatchd_fields(journal):
    journal.wait_for("SYSLOG_IDENTIFIER=netwatchd", count=len(ALERTS))
    (scan,) = journal.entries("NETWATCHD_KIND=fan_out")
    assert scan["NETWATCHD_NEW_PORTS"] == "997" and scan["NETWATCHD_SCORE"] == "166.1"
    warnings = journal.entries("SYSLOG_IDENTIFIER=netwatchd", "--priority=warning")  # 0..4
    assert sorted(e["NETWATCHD_KIND"] for e in warnings) == ["address_change", "beacon", "connect_rate", "fan_out"]
    (beacon,) = journal.entries("NETWATCHD_KIND=beacon")
    assert (beacon["NETWATCHD_DESTINATION"], beacon["NETWATCHD_PERIOD_SEC"], beacon["NETWATCHD_COMMAND"]) == \
        ("[2001:db8::7]:443", "30.100", "nwbeacon")


def test_catalog_is_in_the_database(journal):
    listed = journal.journalctl("--list-catalog").stdout
    for message_id, _ in readme_alert_kinds().values():
        assert f"{message_id} netwatchd: " in listed


def explanation(journal, alert: Alert) -> list:
    """The lines `journalctl -x` adds under the alert's entry."""
    journal.wait_for(f"MESSAGE_ID={alert.message_id}")
    out = journal.journalctl("-x", "-o", "short", f"MESSAGE_ID={alert.message_id}").stdout
    return [line[len("░░"):].strip() for line in out.splitlines() if line.startswith("░░")]


def expected_explanation(alert: Alert) -> list:
    """The catalog entry with each @FIELD@ replaced by the entry's field, as journalctl should."""
    (entry,) = [e for e in parse_catalog(CATALOG.read_text()) if e["id"] == alert.message_id]
    fields = EXPECTED[alert.kind]
    lines = [f"{k}: {v}" for k, v in entry["headers"].items()] + [""] + entry["body"]
    while lines[-1] == "":
        lines.pop()
    # a field the entry lacked would stay as its bare name; KeyError here says which
    return [re.sub(r"@([A-Z0-9_]+)@", lambda m: fields[m.group(1)], line).strip() for line in lines]


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a.kind)
def test_journalctl_x_explains_every_kind_with_the_entrys_fields(journal, alert):
    assert explanation(journal, alert) == expected_explanation(alert)


def test_journalctl_x_text(journal):
    """One explanation spelt out, so a broken substitution cannot hide in both sides above."""
    text = "\n".join(explanation(journal, ALERTS[1]))
    assert text.startswith("Subject: An address moved to another MAC: ip:10.0.0.5\n"
                           "Defined-By: netwatchd\n"
                           "Support: file:///usr/share/doc/netwatchd/README.md\n\n"
                           "The IP address 10.0.0.5 was used by 00:16:3e:00:00:05 and is now used by\n"
                           "00:16:3e:00:00:06. Alert id: 65b-2.\n")


def test_netwatchd_runs_inside_and_logs_to_this_journal(journal, bus):
    """What issue 4's acceptance tests build on: the whole daemon inside the namespace
    (DaemonProcess(command_prefix=journal.command())), its journal entries read back here."""
    require_root_and_bcc()
    with DaemonProcess(bus, {}, command_prefix=journal.command()) as daemon:
        entries = journal.wait_for("SYSLOG_IDENTIFIER=netwatchd", f"_PID={daemon.pid}")
        assert any(e["MESSAGE"].startswith("netwatchd ") and " ready: " in e["MESSAGE"] for e in entries)
        assert daemon.log() == ""  # nothing on stderr: logs went to journald
