"""What ListDevices / ListDevicesPage / GetDevice answer, without a bus: the summary's fields,
the size of ListDevices' reply for a full inventory (dbus-fast's own marshalling, against the
system bus's limit), and the pages."""
from __future__ import annotations

import csv

import pytest
from dbus_fast import DBusError, Message, MessageType

from netwatchd.api import dbus as api
from netwatchd.daemon_view import device_page
from netwatchd.devices.model import COUNTER_NAMES, Device
from netwatchd.devices.queries import device_answer, device_summary, list_devices

# dbus-daemon's max_message_size on the system bus: the default system.conf shows (commented
# out, as built in) <limit name="max_message_size">33554432</limit>.
SYSTEM_BUS_MAX_MESSAGE = 33554432
# The README's ListDevices fields.
SUMMARY_FIELDS = {"mac", "vendor", "randomized", "confirmed", "hostname", "hostname_source", "ipv4", "ipv6",
                  "interface", "vlan", "first_seen_usec", "last_seen_usec", "counters", "tcp_syns", "peers"}
NAME_LISTS = {"dns_names", "http_hosts", "tls_names", "http_requests", "recent_peers"}


def mac_of(n: int) -> str:
    return "02:%02x:%02x:%02x:%02x:%02x" % tuple((n >> s) & 0xFF for s in (32, 24, 16, 8, 0))


def longest_vendor() -> str:
    with open("/usr/share/ieee-data/oui.csv", newline="", encoding="utf-8") as f:
        return max((row[2] for row in csv.reader(f)), key=lambda v: len(v.encode()))


def typical_device(n: int) -> Device:
    """A device as a LAN has them: one IPv4 and two IPv6 addresses, every counter non-zero."""
    return Device(mac=mac_of(n), vendor="Raspberry Pi Trading Ltd", randomized=False, hostname=f"host-{n}",
                  hostname_source="dhcp", interface="eth0", first_seen_usec=1_700_000_000_000_000 + n,
                  last_seen_usec=1_700_000_100_000_000, ipv4={f"192.168.{n >> 8}.{n & 255}": 1},
                  ipv6={f"fe80::{n:x}": 1, f"2001:db8::{n:x}": 1},
                  counters={c: 10**9 + n for c in COUNTER_NAMES}, peers=12, confirmed=True,
                  dns_names={f"name-{k}.example.com": 1 for k in range(64)})


def longest_device(n: int, vendor: str) -> Device:
    """Every field of the summary at its longest: 32 addresses per family, each as long as an
    address can be written, a hostname of 255 bytes each shown escaped (DHCP's option 12 holds
    at most 255; "\x01" is 4 characters), the longest vendor name in ieee-data, a 15-byte
    interface name, every counter and number at 2^63."""
    return Device(mac=mac_of(n), vendor=vendor, randomized=True, hostname="\\x01" * 255, hostname_source="dhcp",
                  interface="i" * 15, vlan=4094, first_seen_usec=2**63, last_seen_usec=2**63,
                  ipv4={f"255.{k}.{(n >> 8) & 255:03d}.{n & 255:03d}": 1 for k in range(100, 132)},
                  ipv6={f"2001:0db8:{k:04x}:{n & 0xFFFF:04x}:ffff:ffff:ffff:ffff": 1 for k in range(32)},
                  counters={c: 2**63 for c in COUNTER_NAMES}, peers=2**63, confirmed=True)


def summaries(devices):
    """What the read model hands ListDevices (ReadModel.device_summaries)."""
    return [device_summary(d) for d in devices]


def reply_size(body_records) -> int:
    """The bytes of a method return carrying `body_records` as aa{sv}, marshalled by dbus-fast."""
    message = Message(message_type=MessageType.METHOD_RETURN, reply_serial=1, destination=":1.42",
                      signature="aa{sv}", body=[body_records])
    try:
        return len(message._marshall(False))
    except TypeError:  # dbus-fast < 2: no negotiate_unix_fd argument
        return len(message._marshall())


def test_the_summary_has_the_documented_fields_and_no_name_lists():
    device = typical_device(1)
    summary = device_summary(device)
    assert set(summary) == SUMMARY_FIELDS
    answer = device_answer(device)
    assert NAME_LISTS <= set(answer) and not NAME_LISTS & set(summary)
    assert {k: v for k, v in summary.items() if k != "confirmed"} == {k: answer[k] for k in SUMMARY_FIELDS - {"confirmed"}}
    assert summary["confirmed"] is True
    variants = api.to_vardict(summary)
    assert variants["confirmed"].signature == "b" and variants["counters"].signature == "a{st}"


def test_listdevices_of_4096_devices_is_far_below_the_bus_limit():
    vendor = longest_vendor()
    sizes = {}
    for what, make in (("typical", typical_device), ("longest", lambda n: longest_device(n, vendor))):
        devices = [make(n) for n in range(4096)]
        sizes[what] = reply_size(api.list_devices_answer(summaries(devices)))
        # the guard's estimate is an upper bound of what dbus-fast really sends
        assert api.records_size_bound([device_summary(d) for d in devices]) >= sizes[what]
    print(f"ListDevices, 4096 devices: {sizes['typical'] / 2**20:.2f} MiB typical, "
          f"{sizes['longest'] / 2**20:.2f} MiB with every field at its longest "
          f"(the system bus: {SYSTEM_BUS_MAX_MESSAGE / 2**20:.0f} MiB)")
    assert sizes["typical"] < SYSTEM_BUS_MAX_MESSAGE / 4
    # what 4096 hostile MACs can make of it (64 addresses and a 255-byte escaped hostname each)
    # still leaves a third of the limit; more devices than that are refused (next test), not sent
    assert sizes["longest"] < SYSTEM_BUS_MAX_MESSAGE * 2 / 3


def test_the_size_bound_holds_for_every_answer_shape():
    """GetDevice's answer has the nested shapes (as, a(sss), a(sqss)) too."""
    device = typical_device(7)
    device.http_requests = [{"method": "GET", "host": "h.example", "path": "/é" * 50}] * 16
    device.recent_peers = [{"address": "2001:db8::1", "port": 443, "transport": "tcp", "name": "n.example"}] * 32
    for record in ({}, device_summary(Device(mac=mac_of(1))), device_answer(device)):
        added = reply_size([api.to_vardict(record)]) - reply_size([])  # what the record adds to a reply
        assert api.records_size_bound([record]) >= added, record


def test_listdevices_refuses_rather_than_send_a_message_the_bus_would_drop(monkeypatch):
    devices = [typical_device(n) for n in range(100)]
    size = api.records_size_bound([device_summary(d) for d in devices])
    monkeypatch.setattr(api, "REPLY_BODY_MAX", size - 1)
    with pytest.raises(DBusError) as info:
        api.list_devices_answer(summaries(devices))
    assert info.value.type == "org.freedesktop.DBus.Error.LimitsExceeded"
    assert str(info.value).startswith("100 devices do not fit in one D-Bus message")
    assert str(info.value).endswith("ask ListDevicesPage")
    monkeypatch.setattr(api, "REPLY_BODY_MAX", size)
    assert len(api.list_devices_answer(summaries(devices))) == 100


def test_pages_cover_listdevices_in_its_order():
    devices = list_devices([typical_device(n) for n in (5, 3, 9, 1, 7)])
    whole = [r["mac"].value for r in api.list_devices_answer(summaries(devices))]
    assert whole == [mac_of(n) for n in (1, 3, 5, 7, 9)]  # first seen first
    pages = []
    for offset in range(0, 5, 2):
        records, total = device_page(devices, offset, 2)
        assert total == 5
        pages += [r["mac"] for r in records]
    assert pages == whole
    assert device_page(devices, 5, 2) == ([], 5)
    assert device_page(devices, 2**32 - 1, 1000) == ([], 5)
    assert device_page([], 0, 100) == ([], 0)
