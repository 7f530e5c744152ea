"""systemd/netwatchd.catalog: one well-formed entry per alert kind, and journalctl accepts it.

The format (systemd's catalog(7) conventions): `-- <32 hex MESSAGE_ID>`, header lines up to a
blank line, then the body; `@FIELD@` in it is replaced by the shown entry's field.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from netwatchd.alerting.alerts import KINDS, Alert, AlertIds
from netwatchd.config import AlertsConfig
from netwatchd.alerting.detector import Detector
from netwatchd.api.journal import journal_fields
from tests.conftest import require_tools
from tests.support.oracles import readme_alert_kinds
from netwatchd.alerting.observation import TickObservation

CATALOG = Path(__file__).resolve().parents[2] / "systemd" / "netwatchd.catalog"



def detector_alerts(randomized_macs: str) -> List[Alert]:
    """Alerts of every kind and subject shape, as the real detector raises them."""
    cfg = AlertsConfig(learning_period_sec=0, consecutive_ticks=1, warmup_ticks=1, fan_out_floor=1,
                       device_connect_floor=1, process_connect_floor=1, cold_connect_rate=5,
                       randomized_macs=randomized_macs)
    detector = Detector(cfg, AlertIds(1_000_000), 0)
    obs = TickObservation(
        time_usec=2_000_000, device_connects={"00:16:3e:00:00:01": 100}, device_new_ports={"00:16:3e:00:00:02": 100},
        command_connects={"curl": 100}, command_failed={"curl": 3}, command_pids={"curl": [5]},
        new_devices=[{"mac": "00:16:3e:00:00:03", "randomized": False, "vendor": "Xensource", "interface": "eth0",
                      "ipv4": ["10.0.0.3"], "ipv6": []},
                     {"mac": "02:00:00:00:00:04", "randomized": True, "vendor": "", "interface": "eth0",
                      "ipv4": [], "ipv6": []}],
        address_changes=[{"ip": "10.0.0.5", "old_mac": "00:16:3e:00:00:05", "new_mac": "00:16:3e:00:00:06",
                          "flip_flop": True}])
    return detector.tick(obs) + detector.tick(TickObservation(time_usec=3_000_000))  # new devices: a tick later


def parse_catalog(text: str) -> List[Dict]:
    entries = []
    for line in text.splitlines():
        m = re.fullmatch(r"-- ([0-9a-f]{32})(?: (\S+))?", line)
        if m:
            entries.append({"id": m.group(1), "lang": m.group(2), "headers": {}, "body": [], "in_body": False})
        elif not entries:
            assert line == "" or line.startswith("#"), f"text before the first entry: {line!r}"
        elif line.startswith("#"):
            continue
        elif not entries[-1]["in_body"]:
            if line == "":
                entries[-1]["in_body"] = True
            else:
                key, sep, value = line.partition(": ")
                assert sep and re.fullmatch(r"[A-Z][A-Za-z-]*", key), f"bad header line {line!r}"
                entries[-1]["headers"][key] = value
        else:
            entries[-1]["body"].append(line)
    return entries


@pytest.fixture(scope="module")
def entries():
    return parse_catalog(CATALOG.read_text())


def test_one_entry_per_kind_and_nothing_else(entries):
    ids = Counter(e["id"] for e in entries)
    assert ids == Counter(message_id for message_id, _ in readme_alert_kinds().values())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_entry_is_complete(entries, kind):
    (entry,) = [e for e in entries if e["id"] == KINDS[kind]["message_id"]]
    assert entry["lang"] is None
    assert entry["headers"]["Defined-By"] == "netwatchd"
    assert entry["headers"]["Subject"]
    # the package's path (debian/rules keeps README.md uncompressed); make install rewrites it
    assert entry["headers"]["Support"] == "file:///usr/share/doc/netwatchd/README.md"
    body = "\n".join(entry["body"]).strip()
    assert len(body) > 200, "the body explains the alert, its fields and what to do"
    assert "What to do" in body


@pytest.mark.parametrize("randomized_macs", ["alert", "once"])
def test_every_substituted_field_is_in_every_entry_of_its_kind(entries, randomized_macs):
    """A field an alert lacks would show as a literal @FIELD@ in journalctl -x."""
    alerts = detector_alerts(randomized_macs)
    subjects = {(a.kind, a.subject.split(":")[0]) for a in alerts}
    assert subjects == {("new_device", "device"), ("new_device", "randomized-macs" if randomized_macs == "once"
                        else "device"), ("address_change", "ip"), ("fan_out", "device"),
                        ("connect_rate", "device"), ("connect_rate", "command")}
    for alert in alerts:
        (entry,) = [e for e in entries if e["id"] == alert.message_id]
        used = set(re.findall(r"@([A-Z0-9_]+)@", entry["headers"]["Subject"] + "\n".join(entry["body"])))
        fields = journal_fields(alert)
        assert used <= set(fields), (alert.kind, alert.subject, used - set(fields))


def test_journalctl_compiles_it(tmp_path):
    """The same parser make install runs, on a root of our own (no privileges needed)."""
    require_tools("journalctl")
    catalog_dir = tmp_path / "usr/lib/systemd/catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(CATALOG, catalog_dir)
    r = subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (0, "")
    listed = subprocess.run(["journalctl", f"--root={tmp_path}", "--list-catalog"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    assert sorted(line.split()[0] for line in listed) == sorted(m for m, _ in readme_alert_kinds().values())
    assert all(line.split(" ", 1)[1].startswith("netwatchd: ") for line in listed)  # Defined-By
