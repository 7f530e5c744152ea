"""Alerts as journal entries (pure fields), the journald path with systemd.journal faked, and the
one-line stderr fallback when there is no journald."""
from __future__ import annotations

import io
import json
import re

import pytest

from netwatchd.api import journal as journal_sink
from netwatchd.alerting.alerts import KINDS, Alert
from netwatchd.api.journal import JournalSink, field_name, journal_fields, stderr_line
from tests.support.oracles import readme_alert_kinds

SCAN = Alert("6560f1a2-7", "fan_out", "device:02:00:00:00:00:0a", 1_700_000_000_123_456,
             "device 02:00:00:00:00:0a reached 120 new ports and 1 new peers in a tick",
             observed=120, baseline=1.25, score=37.123456789,
             details={"mac": "02:00:00:00:00:0a", "new_ports": "120", "new_peers": "1"})


def test_fields_of_an_alert():
    assert journal_fields(SCAN) == {
        "MESSAGE": SCAN.message,
        "MESSAGE_ID": "1b4bb667acef4d14b880d00c9cb6cfd7",
        "PRIORITY": "3",
        "SYSLOG_IDENTIFIER": "netwatchd",
        "NETWATCHD_ALERT_ID": "6560f1a2-7",
        "NETWATCHD_KIND": "fan_out",
        "NETWATCHD_SUBJECT": "device:02:00:00:00:00:0a",
        "NETWATCHD_OBSERVED": "120",
        "NETWATCHD_BASELINE": "1.25",
        "NETWATCHD_SCORE": "37.123457",
        "NETWATCHD_MAC": "02:00:00:00:00:0a",
        "NETWATCHD_NEW_PORTS": "120",
        "NETWATCHD_NEW_PEERS": "1",
    }


def test_the_fleet_ids_are_fields_beside_the_details_they_never_replace():
    """What the daemon adds (journal_fields of netwatchd/api/fleet_labels.py): the same ids as the
    Alertmanager labels. The fixed fields and the details keep their names and meanings: a port
    scan's NETWATCHD_HOST is the host scanned, the writer's id is NETWATCHD_HOST_ID."""
    scan = Alert("6560f1a2-8", "port_scan", "device:02:00:00:00:00:0a", 1_700_000_000_123_456, "a port scan",
                 details={"mac": "02:00:00:00:00:0a", "host": "10.0.0.9", "count": "15"})
    ids = {"NETWATCHD_HOST_ID": "0123456789abcdef0123456789abcdef",
           "NETWATCHD_SEGMENT": "192.0.2.0/24@02:00:00:00:00:01", "NETWATCHD_MAC": "02:00:00:00:00:0a",
           "NETWATCHD_HOST": "forged", "NETWATCHD_KIND": "forged"}
    fields = journal_fields(scan, ids)
    assert fields["NETWATCHD_HOST_ID"] == ids["NETWATCHD_HOST_ID"]
    assert fields["NETWATCHD_SEGMENT"] == ids["NETWATCHD_SEGMENT"]
    assert (fields["NETWATCHD_HOST"], fields["NETWATCHD_KIND"], fields["NETWATCHD_MAC"]) == \
        ("10.0.0.9", "port_scan", "02:00:00:00:00:0a")
    assert set(fields) == set(journal_fields(scan)) | {"NETWATCHD_HOST_ID", "NETWATCHD_SEGMENT"}


def test_the_readme_documents_every_kind():
    assert sorted(readme_alert_kinds()) == sorted(KINDS)


@pytest.mark.parametrize("kind", sorted(readme_alert_kinds()))
def test_every_kind_has_its_message_id_and_priority(kind):
    """As the README's table documents them: users filter the journal by these."""
    fields = journal_fields(Alert("a-1", kind, "device:x", 1, "m"))
    message_id, priority = readme_alert_kinds()[kind]
    assert fields["MESSAGE_ID"] == message_id
    assert fields["PRIORITY"] == str(priority)
    assert fields["NETWATCHD_OBSERVED"] == fields["NETWATCHD_BASELINE"] == fields["NETWATCHD_SCORE"] == "0"


@pytest.mark.parametrize("key, name", [
    ("old_mac", "NETWATCHD_OLD_MAC"),
    ("new-peers", "NETWATCHD_NEW_PEERS"),
    ("ip v6", "NETWATCHD_IP_V6"),
    ("Größe", "NETWATCHD_GR_SSE"),  # str.upper: ß -> SS
    ("", "NETWATCHD_DETAIL"),
    ("x" * 100, "NETWATCHD_" + "X" * 54),
])
def test_detail_keys_become_valid_field_names(key, name):
    assert field_name(key) == name
    # journald's rule: A-Z, 0-9, '_', not starting with '_', at most 64 characters
    assert re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", name)


def test_a_detail_never_overwrites_a_fixed_field_or_an_earlier_detail():
    alert = Alert("a-1", "connect_rate", "command:curl", 1, "m", observed=9,
                  details={"kind": "evil", "subject": "evil", "old-mac": "1", "old_mac": "2"})
    fields = journal_fields(alert)
    assert fields["NETWATCHD_KIND"] == "connect_rate"
    assert fields["NETWATCHD_SUBJECT"] == "command:curl"
    assert fields["NETWATCHD_OLD_MAC"] == "1"  # details are taken in key order: "old-mac" < "old_mac"


def test_every_value_is_printable_and_escapes_are_not_doubled():
    # A name escaped where it was decoded (the usual case), and raw control characters in a
    # message and a detail (a detail from anywhere): neither reaches journald raw.
    alert = Alert("a-3", "connect_rate", r"command:\x1b[31mRED\x1b[0m", 1,
                  "command \x1b[31mRED\x1b[0m made 4000 connects\nFAKE", observed=4000,
                  details={"command": r"\x1b[31mRED\x1b[0m", "name": "\u202eevil\x1b]52;c;ZXZp\x07", "pids": [7, 8]})
    fields = journal_fields(alert)
    assert fields["NETWATCHD_SUBJECT"] == r"command:\x1b[31mRED\x1b[0m"
    assert fields["NETWATCHD_COMMAND"] == r"\x1b[31mRED\x1b[0m"
    assert fields["MESSAGE"] == r"command \x1b[31mRED\x1b[0m made 4000 connects\x0aFAKE"
    assert fields["NETWATCHD_NAME"] == r"\u202eevil\x1b]52;c;ZXZp\x07"
    assert fields["NETWATCHD_PIDS"] == "[7, 8]"
    assert all(value.isprintable() for value in fields.values())


def parse_line(line: str) -> dict:
    assert line.startswith("netwatchd: alert: ") and "\n" not in line.rstrip("\n")
    pairs = re.findall(r'([A-Z_]+)=("(?:[^"\\]|\\.)*"|\S+)', line[len("netwatchd: alert: "):])
    return {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}


def test_stderr_line_carries_every_field_and_reads_back():
    tricky = Alert("a-2", "address_change", "ip:10.0.0.5", 5, 'flip flop: "10.0.0.5" a=b\nsecond line',
                   details={"ip": "10.0.0.5", "note": ""})
    fields = journal_fields(tricky)
    line = stderr_line(fields)
    assert "\n" not in line
    assert parse_line(line) == fields
    assert "NETWATCHD_IP=10.0.0.5 " in line  # plain values stay unquoted, readable


def test_without_journald_the_alert_goes_to_stderr(tmp_path, capsys):
    JournalSink(socket_path=str(tmp_path / "no-such-socket")).emit(SCAN)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert parse_line(captured.err) == journal_fields(SCAN)
    assert captured.err.count("\n") == 1


class FakeJournal:
    def __init__(self, fail=False):
        self.sent = []
        self.fail = fail

    def send(self, MESSAGE, **fields):
        if self.fail:
            raise OSError(11, "Resource temporarily unavailable")
        self.sent.append(dict(fields, MESSAGE=MESSAGE))


@pytest.fixture
def fake_journal(monkeypatch):
    import systemd.journal

    fake = FakeJournal()
    monkeypatch.setattr(systemd.journal, "send", fake.send)
    return fake


def test_with_journald_one_entry_with_every_field(tmp_path, fake_journal, capsys):
    socket = tmp_path / "socket"
    socket.touch()
    JournalSink(socket_path=str(socket)).emit(SCAN)
    assert fake_journal.sent == [journal_fields(SCAN)]
    assert capsys.readouterr().err == ""


def test_journald_refusing_falls_back_to_stderr(tmp_path, fake_journal, caplog):
    socket = tmp_path / "socket"
    socket.touch()
    fake_journal.fail = True
    stream = io.StringIO()
    JournalSink(socket_path=str(socket), stream=stream).emit(SCAN)
    assert parse_line(stream.getvalue()) == journal_fields(SCAN)
    assert "journald refused alert 6560f1a2-7" in caplog.text


def test_the_default_socket_is_journalds():
    assert JournalSink().socket_path == journal_sink.JOURNAL_SOCKET == "/run/systemd/journal/socket"
