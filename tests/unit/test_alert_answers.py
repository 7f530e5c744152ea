"""Alerts as the D-Bus API and netwatchctl show them (pure: no bus)."""
from __future__ import annotations

import json
from types import SimpleNamespace

from netwatchd.ctl import main as ctl
from netwatchd.ctl import render
from netwatchd.alerting.alerts import KINDS, Alert, AlertLog
from netwatchd.api.dbus import FIELD_SIGNATURES, alert_answer, to_vardict
from netwatchd.daemon_view import alert_counts

ALERT = Alert("65a-3", "new_device", "device:00:16:3e:00:00:03", 1_700_000_000_000_000,
              "new device 00:16:3e:00:00:03 (Xensource) on eth0", observed=1, baseline=0, score=0,
              details={"mac": "00:16:3e:00:00:03", "vendor": "Xensource"})


def test_a_record_has_every_field_with_its_dbus_type():
    answer = alert_answer(ALERT)
    assert answer == {
        "id": "65a-3", "kind": "new_device", "subject": "device:00:16:3e:00:00:03",
        "timestamp_usec": 1_700_000_000_000_000, "message": ALERT.message,
        "observed": 1.0, "baseline": 0.0, "score": 0.0, "priority": 5,
        "details": {"mac": "00:16:3e:00:00:03", "vendor": "Xensource"},
    }
    assert all(isinstance(answer[k], float) for k in ("observed", "baseline", "score"))  # 'd', even from ints
    variants = to_vardict(answer)
    assert {k: v.signature for k, v in variants.items()} == {k: FIELD_SIGNATURES[k] for k in answer}
    assert variants["details"].signature == "a{ss}" and variants["priority"].signature == "i"


def test_counts_list_every_kind_and_are_empty_when_alerts_are_off():
    log = AlertLog(10)
    log.add(ALERT)
    log.add(ALERT)
    assert alert_counts(SimpleNamespace(log=log)) == {kind: (2 if kind == "new_device" else 0) for kind in KINDS}
    assert alert_counts(None) == {}


def test_alerts_table_newest_first_as_given():
    older = Alert("65a-2", "fan_out", "device:aa", ALERT.timestamp_usec - 1_000_000, "a scan")
    text = render.render_alerts([alert_answer(ALERT), alert_answer(older)])
    lines = text.splitlines()
    assert lines[0].split() == ["TIME", "KIND", "SUBJECT", "MESSAGE"]
    assert "new_device" in lines[1] and ALERT.message in lines[1]
    assert lines[1].startswith(render.format_time(ALERT.timestamp_usec))
    assert "fan_out" in lines[2] and lines[2].endswith("a scan")
    assert render.render_alerts([]) == "No alerts."


def test_status_shows_counts_and_learning():
    counts = {"new_device": 2, "address_change": 0, "connect_rate": 1, "fan_out": 0}
    lines = render.render_alert_status({"AlertCounts": counts, "AlertsRaised": 3, "Learning": True})
    assert lines == ["       Alerts: 3 raised: new_device 2, address_change 0, connect_rate 1, fan_out 0",
                     "     Learning: yes (new devices are learnt without alerts)"]
    assert render.render_alert_status({"AlertCounts": {}, "AlertsRaised": 0, "Learning": False}) == [
        "       Alerts: off (alerts.enabled is false)"]
    assert render.render_alert_status({}) == []  # a daemon from before alerts


def test_watched_alert_line_and_json():
    record = alert_answer(ALERT)
    line = render.render_watched_alert("65a-3", "new_device", "device:00:16:3e:00:00:03", record)
    assert line == (f"{render.format_time(ALERT.timestamp_usec)}  65a-3  new_device  device:00:16:3e:00:00:03  "
                    f"{ALERT.message}")
    assert json.loads(render.watched_alert_json("65a-3", "new_device", "device:x", record)) == record
    # the record already gone from ListAlerts: the signal's own three fields
    bare = render.render_watched_alert("65a-9", "fan_out", "device:aa", None)
    assert bare.endswith("  65a-9  fan_out  device:aa")
    assert json.loads(render.watched_alert_json("65a-9", "fan_out", "device:aa", None)) == {
        "id": "65a-9", "kind": "fan_out", "subject": "device:aa"}


def test_new_verbs_parse():
    assert ctl.parse_args(["alerts", "--limit", "5", "--json"]).limit == 5
    assert ctl.parse_args(["--json", "watch"]).command == "watch"
    assert ctl.main(["alerts", "--limit", "-1"]) == ctl.EXIT_USAGE
