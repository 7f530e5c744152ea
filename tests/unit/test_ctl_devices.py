"""netwatchctl devices reads the inventory page by page (ListDevicesPage), and from ListDevices
when netwatchd is older than ListDevicesPage: against a fake netwatchd (the real one is in
tests/integration/test_readme_commands.py)."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest

from netwatchd.ctl import bus_client
from netwatchd.ctl.bus_client import BusCallError


class FakeNetwatchd:
    """Answers _call_on as netwatchd would, from `devices` (a list of records); `between_pages`
    runs after each page is served, to change the inventory meanwhile."""

    def __init__(self, devices: List[Dict[str, Any]], has_pages: bool = True, between_pages=None):
        self.devices = devices
        self.has_pages = has_pages
        self.between_pages = between_pages
        self.calls: List[tuple] = []
        self.disconnected = False

    def disconnect(self) -> None:
        self.disconnected = True

    async def call_on(self, bus, destination, path, interface, member, signature="", body=()):
        self.calls.append((member, tuple(body)))
        if member == "ListDevicesPage":
            if not self.has_pages:
                raise BusCallError("org.freedesktop.DBus.Error.UnknownMethod",
                                   'No such method "ListDevicesPage" in interface "org.netwatchd.Netwatchd1.Manager"')
            offset, limit = body
            assert limit <= 1000
            page = [dict(d) for d in self.devices[offset:offset + limit]], len(self.devices)
            if self.between_pages:
                self.between_pages(self)
            return list(page)
        if member == "ListDevices":
            return [[dict(d) for d in self.devices]]
        raise AssertionError(member)


@pytest.fixture
def netwatchd(monkeypatch):
    def install(fake: FakeNetwatchd) -> FakeNetwatchd:
        async def connect():
            return fake

        monkeypatch.setattr(bus_client, "_connect", connect)
        monkeypatch.setattr(bus_client, "_call_on", fake.call_on)
        return fake

    return install


def records(n: int, start: int = 0) -> List[Dict[str, Any]]:
    return [{"mac": "02:00:00:00:%02x:%02x" % divmod(i, 256), "ipv4": []} for i in range(start, start + n)]


def test_every_device_once_in_order_over_pages_of_1000(netwatchd):
    fake = netwatchd(FakeNetwatchd(records(2500)))
    assert bus_client.list_devices() == records(2500)
    assert fake.calls == [("ListDevicesPage", (0, 1000)), ("ListDevicesPage", (1000, 1000)),
                          ("ListDevicesPage", (2000, 1000))]
    assert fake.disconnected


def test_an_empty_inventory_is_one_call(netwatchd):
    fake = netwatchd(FakeNetwatchd([]))
    assert bus_client.list_devices() == []
    assert fake.calls == [("ListDevicesPage", (0, 1000))]


def test_a_device_pushed_into_the_next_page_is_listed_once(netwatchd):
    def new_device_first(fake: FakeNetwatchd) -> None:
        if len(fake.calls) == 1:  # after the first page: one more device, sorted before the rest
            fake.devices.insert(0, records(1, start=5000)[0])

    netwatchd(FakeNetwatchd(records(1500), between_pages=new_device_first))
    listed = [d["mac"] for d in bus_client.list_devices()]
    assert listed == [d["mac"] for d in records(1500)]  # the 1000th is not there twice


def test_an_older_netwatchd_is_asked_with_listdevices(netwatchd):
    fake = netwatchd(FakeNetwatchd(records(3), has_pages=False))
    assert bus_client.list_devices() == records(3)
    assert [member for member, _ in fake.calls] == ["ListDevicesPage", "ListDevices"]


def test_other_errors_are_the_callers(netwatchd, monkeypatch):
    netwatchd(FakeNetwatchd(records(3)))

    async def denied(*args, **kwargs):
        raise BusCallError("org.freedesktop.DBus.Error.AccessDenied", "no")

    monkeypatch.setattr(bus_client, "_call_on", denied)
    with pytest.raises(BusCallError) as info:
        bus_client.list_devices()
    assert info.value.name == "org.freedesktop.DBus.Error.AccessDenied"
