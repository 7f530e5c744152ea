"""An alert's fleet identity (netwatchd/api/fleet_labels.py): the Alertmanager labels that make
N observers of one event one alert, the annotations that may differ between them, and the
journal fields that carry the same ids."""
import dataclasses

import pytest

from netwatchd.alerting.alerts import KINDS, Alert
from netwatchd.api import fleet_labels
from netwatchd.api.fleet_labels import (ANNOTATION_MAX, alertname, annotations, fingerprint, journal_fields,
                                        labels, severity)
from netwatchd.config import AlertLifetimes
from netwatchd.read_model import HostIdentity

MAC = "3c:22:fb:01:02:03"
GW_SEGMENT = "192.168.1.0/24@52:54:00:12:34:56"
OTHER_SEGMENT = "10.9.0.0/24"
HOST_A = HostIdentity(host="aaaa1111", hostname="alpha",
                      segments=(("eth0", GW_SEGMENT), ("eth1", OTHER_SEGMENT)))
# another host on the same LAN: its own id and name, its own interface names, the same segment
HOST_B = HostIdentity(host="bbbb2222", hostname="beta",
                      segments=(("enp3s0", GW_SEGMENT),))


def alert(kind="new_device", subject=f"device:{MAC}", message="new device", details=None, **kw):
    return Alert(id="65f0a1b2-7", kind=kind, subject=subject, timestamp_usec=1_700_000_000_000_000,
                 message=message, details=dict(details or {}), **kw)


# -- alertname and severity ------------------------------------------------------------------------

CAMEL = {
    "new_device": "NetwatchdNewDevice",
    "address_change": "NetwatchdAddressChange",
    "connect_rate": "NetwatchdConnectRate",
    "fan_out": "NetwatchdFanOut",
    "beacon": "NetwatchdBeacon",
    "mac_flood": "NetwatchdMacFlood",
    "dhcp_server_new": "NetwatchdDhcpServerNew",
    "dhcp_server_change": "NetwatchdDhcpServerChange",
    "dns_nxdomain_burst": "NetwatchdDnsNxdomainBurst",
    "dns_tunnel": "NetwatchdDnsTunnel",
    "port_scan": "NetwatchdPortScan",
    "host_scan": "NetwatchdHostScan",
    "address_sweep": "NetwatchdAddressSweep",
}


def test_the_table_names_every_kind():
    assert set(CAMEL) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_alertname_is_netwatchd_and_the_kind_in_camel_case(kind):
    assert alertname(kind) == CAMEL[kind]
    assert labels(alert(kind=kind), HOST_A)["alertname"] == CAMEL[kind]


def test_alertnames_are_distinct_and_label_safe():
    names = [alertname(k) for k in KINDS]
    assert len(set(names)) == len(names)
    assert all(n.isalnum() and n.startswith("Netwatchd") for n in names)


@pytest.mark.parametrize("priority, name", [(3, "critical"), (4, "warning"), (5, "info")])
def test_severity_from_the_journal_priority(priority, name):
    assert severity(priority) == name


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_gets_the_severity_of_its_priority(kind):
    expected = {3: "critical", 4: "warning", 5: "info"}[KINDS[kind]["priority"]]
    assert labels(alert(kind=kind), HOST_A)["severity"] == expected


# -- labels ------------------------------------------------------------------------------------------

def test_new_device_labels_are_segment_and_mac_without_host():
    a = alert(details={"interface": "eth1", "mac": MAC, "vendor": "Acme"})
    assert labels(a, HOST_A) == {"alertname": "NetwatchdNewDevice", "kind": "new_device", "severity": "info",
                                 "segment": OTHER_SEGMENT, "mac": MAC}


def test_two_observers_on_one_segment_post_the_same_labels():
    """The dedup property: each host names the device's segment alike, whatever its own id,
    hostname or interface name, so Alertmanager holds one alert."""
    seen_by_a = alert(details={"interface": "eth0", "vendor": "Acme"})
    seen_by_b = alert(details={"interface": "enp3s0", "vendor": "Acme Inc."}, message="new device (Acme Inc.)")
    la, lb = labels(seen_by_a, HOST_A), labels(seen_by_b, HOST_B)
    assert la == lb
    assert la["segment"] == GW_SEGMENT
    assert "host" not in la
    assert fingerprint(la) == fingerprint(lb)
    # the same Alert object seen by both hosts through interfaces of the same name
    same = alert(details={"interface": "eth0"})
    other_b = HOST_B._replace(segments=(("eth0", GW_SEGMENT),))
    assert fingerprint(labels(same, HOST_A)) == fingerprint(labels(same, other_b))
    # ...while the annotations say who observed it
    assert annotations(seen_by_a, HOST_A)["observer"] == "aaaa1111"
    assert annotations(seen_by_b, HOST_B)["observer"] == "bbbb2222"


def test_another_segment_is_another_alert():
    a = alert(details={"interface": "eth0"})
    b = alert(details={"interface": "eth1"})
    assert fingerprint(labels(a, HOST_A)) != fingerprint(labels(b, HOST_A))


def test_fingerprint_is_the_sorted_label_set():
    assert fingerprint({"b": "2", "a": "1"}) == fingerprint({"a": "1", "b": "2"}) == "a=1\x1fb=2"


def test_command_alert_labels_are_host_and_command_without_segment():
    a = alert(kind="connect_rate", subject="command:curl", details={"pid": "42"})
    assert labels(a, HOST_A) == {"alertname": "NetwatchdConnectRate", "kind": "connect_rate",
                                 "severity": "warning", "host": "aaaa1111", "command": "curl"}
    assert labels(a, HOST_A) != labels(a, HOST_B), "a command on another host is another alert"


def test_a_beacon_from_a_command_adds_its_destination():
    a = alert(kind="beacon", subject="command:updater", details={"destination": "203.0.113.9:443"})
    assert labels(a, HOST_A) == {"alertname": "NetwatchdBeacon", "kind": "beacon", "severity": "warning",
                                 "host": "aaaa1111", "command": "updater", "destination": "203.0.113.9:443"}


def test_a_beacon_from_a_device_adds_its_destination_to_segment_and_mac():
    a = alert(kind="beacon", subject=f"device:{MAC}", details={"destination": "203.0.113.9:443", "interface": "eth0"})
    assert labels(a, HOST_A) == {"alertname": "NetwatchdBeacon", "kind": "beacon", "severity": "warning",
                                 "segment": GW_SEGMENT, "mac": MAC, "destination": "203.0.113.9:443"}


def test_only_beacons_carry_a_destination_label():
    a = alert(kind="connect_rate", subject="command:curl", details={"destination": "203.0.113.9:443"})
    assert "destination" not in labels(a, HOST_A)


def test_address_change_labels_segment_ip_and_the_mac_it_moved_to():
    a = alert(kind="address_change", subject="ip:192.168.1.20",
              details={"ip": "192.168.1.20", "old_mac": "00:11:22:33:44:55", "new_mac": MAC, "flip_flop": "false"})
    assert labels(a, HOST_A) == {"alertname": "NetwatchdAddressChange", "kind": "address_change",
                                 "severity": "warning", "segment": GW_SEGMENT, "ip": "192.168.1.20", "mac": MAC}


def test_mac_flood_labels_segment_and_subject_mac_flood():
    a = alert(kind="mac_flood", subject="interface:eth1", details={"interface": "eth1", "count": "300"})
    assert labels(a, HOST_A) == {"alertname": "NetwatchdMacFlood", "kind": "mac_flood", "severity": "critical",
                                 "segment": OTHER_SEGMENT, "subject": "mac-flood"}
    # the interface's name is not in the labels: another host's flood alert on the LAN is the same
    b = alert(kind="mac_flood", subject="interface:enp3s0", details={"interface": "enp3s0", "count": "290"})
    a0 = alert(kind="mac_flood", subject="interface:eth0", details={"interface": "eth0", "count": "300"})
    assert labels(a0, HOST_A) == labels(b, HOST_B)


def test_randomized_macs_keep_their_subject():
    a = alert(subject="randomized-macs", details={"interface": "eth0", "mac": "2a:00:00:00:00:01"})
    out = labels(a, HOST_A)
    assert out["subject"] == "randomized-macs" and out["segment"] == GW_SEGMENT
    assert "mac" not in out


def test_a_device_alert_without_interface_detail_takes_the_argument_then_the_first_segment():
    a = alert(kind="fan_out", subject=f"device:{MAC}", details={"mac": MAC, "new_ports": "40"})
    assert labels(a, HOST_A, interface="eth1")["segment"] == OTHER_SEGMENT
    assert labels(a, HOST_A)["segment"] == GW_SEGMENT  # no interface known: the first one's
    assert labels(a, HOST_A, interface="wlan9")["segment"] == GW_SEGMENT  # not watched: the first one's
    empty = alert(details={"interface": ""})
    assert labels(empty, HOST_A, interface="eth1")["segment"] == OTHER_SEGMENT
    # the alert's own interface wins over the argument
    own = alert(details={"interface": "eth0"})
    assert labels(own, HOST_A, interface="eth1")["segment"] == GW_SEGMENT


def test_no_watched_interface_gives_an_empty_segment():
    assert labels(alert(details={"interface": "eth0"}), HostIdentity(host="h"))["segment"] == ""


# -- annotations ---------------------------------------------------------------------------------------

def test_annotations_carry_message_observers_and_details():
    a = alert(message="new device 3c:22:fb:01:02:03 (Acme) on eth0", observed=1, baseline=0.5, score=2.25,
              details={"interface": "eth0", "vendor": "Acme"})
    out = annotations(a, HOST_A, observers=["zz99", "bbbb2222", "aaaa1111"])
    assert out["summary"] == "new device 3c:22:fb:01:02:03 (Acme) on eth0"
    assert out["observer"] == "aaaa1111"
    assert out["observer_hostname"] == "alpha"
    assert out["observers"] == "aaaa1111 bbbb2222 zz99"
    assert out["observer_count"] == "3"
    assert out["message_id"] == KINDS["new_device"]["message_id"]
    assert out["alert_id"] == "65f0a1b2-7"
    assert out["subject"] == f"device:{MAC}"
    assert (out["observed"], out["baseline"], out["score"]) == ("1", "0.5", "2.25")
    assert out["vendor"] == "Acme" and out["interface"] == "eth0"
    assert all(isinstance(v, str) for v in out.values())


def test_own_host_is_always_an_observer():
    out = annotations(alert(), HOST_A)
    assert (out["observers"], out["observer_count"]) == ("aaaa1111", "1")
    out = annotations(alert(), HOST_A, observers=("cccc", "aaaa1111", "cccc"))
    assert (out["observers"], out["observer_count"]) == ("aaaa1111 cccc", "2")


def test_a_detail_named_like_a_fixed_annotation_does_not_overwrite_it():
    a = alert(message="the real message",
              details={"summary": "forged", "observer": "forged", "message_id": "forged", "extra": "kept"})
    out = annotations(a, HOST_A)
    assert out["summary"] == "the real message"
    assert out["observer"] == "aaaa1111"
    assert out["message_id"] == KINDS["new_device"]["message_id"]
    assert out["extra"] == "kept"


def test_annotation_values_are_clipped():
    a = alert(message="m" * 5000, details={"samples": "x" * 2000, "short": "y" * ANNOTATION_MAX})
    out = annotations(a, HOST_A)
    assert len(out["summary"]) == ANNOTATION_MAX == 1024
    assert out["summary"] == "m" * 1023 + "…"
    assert len(out["samples"]) == 1024
    assert out["short"] == "y" * 1024  # at the bound: kept whole
    assert all(len(v) <= ANNOTATION_MAX for v in out.values())


def test_labels_are_not_changed_by_annotations_material():
    """What differs between observers (message, numbers, vendor) never splits the alert."""
    a = alert(message="one", observed=1, details={"interface": "eth0", "vendor": "A"})
    b = alert(message="two", observed=9, score=3, details={"interface": "eth0", "vendor": "B"})
    assert labels(a, HOST_A) == labels(b, HOST_A)


# -- journal fields ----------------------------------------------------------------------------------------

def test_journal_fields_of_a_device_alert():
    a = alert(details={"interface": "eth0"})
    assert journal_fields(a, HOST_A) == {"NETWATCHD_HOST_ID": "aaaa1111", "NETWATCHD_SEGMENT": GW_SEGMENT,
                                         "NETWATCHD_MAC": MAC}


def test_journal_fields_of_a_device_alert_use_the_interface_argument():
    a = alert(kind="fan_out", details={"mac": MAC})
    assert journal_fields(a, HOST_A, interface="eth1")["NETWATCHD_SEGMENT"] == OTHER_SEGMENT


def test_journal_fields_of_a_command_alert():
    a = alert(kind="beacon", subject="command:updater", details={"destination": "203.0.113.9:443"})
    assert journal_fields(a, HOST_A) == {"NETWATCHD_HOST_ID": "aaaa1111", "NETWATCHD_COMMAND": "updater",
                                         "NETWATCHD_DESTINATION": "203.0.113.9:443"}


def test_journal_fields_never_set_subject_kind_or_alertname():
    """NETWATCHD_SUBJECT is the alert's own subject (api/journal.py): the "mac-flood" label
    must not replace it."""
    a = alert(kind="mac_flood", subject="interface:eth1", details={"interface": "eth1"})
    fields = journal_fields(a, HOST_A)
    assert fields == {"NETWATCHD_HOST_ID": "aaaa1111", "NETWATCHD_SEGMENT": OTHER_SEGMENT}
    for name in ("NETWATCHD_SUBJECT", "NETWATCHD_KIND", "NETWATCHD_ALERTNAME", "NETWATCHD_SEVERITY"):
        assert name not in fields


def test_journal_fields_of_an_address_change():
    a = alert(kind="address_change", subject="ip:192.168.1.20", details={"new_mac": MAC, "old_mac": "00:11:22:33:44:55"})
    assert journal_fields(a, HOST_B) == {"NETWATCHD_HOST_ID": "bbbb2222", "NETWATCHD_SEGMENT": GW_SEGMENT,
                                         "NETWATCHD_IP": "192.168.1.20", "NETWATCHD_MAC": MAC}


def test_journal_fields_merge_into_the_journal_entry():
    from netwatchd.api.journal import journal_fields as entry_fields
    a = alert(kind="mac_flood", subject="interface:eth1", details={"interface": "eth1"})
    fields = entry_fields(a, journal_fields(a, HOST_A))
    assert fields["NETWATCHD_SUBJECT"] == "interface:eth1"
    assert fields["NETWATCHD_HOST_ID"] == "aaaa1111"
    assert fields["NETWATCHD_SEGMENT"] == OTHER_SEGMENT


# -- the lifetimes' table ---------------------------------------------------------------------------------

def test_alert_lifetimes_have_one_field_per_kind():
    names = [f.name for f in dataclasses.fields(AlertLifetimes)]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(KINDS)


def test_lifetime_of_each_kind_is_its_field():
    lifetimes = AlertLifetimes()
    for kind in KINDS:
        assert lifetimes.of(kind) == getattr(lifetimes, kind)
        assert 10 <= lifetimes.of(kind) <= 30 * 86400


def test_host_id_pattern_is_the_identity_pattern():
    assert fleet_labels.HOST_ID.fullmatch("0123456789abcdef0123456789abcdef")
    assert not fleet_labels.HOST_ID.fullmatch("has space")
