"""Only Ethernet-like interfaces are watched (devices.interfaces): what /sys says, what `auto`
picks, the named config error for a listed non-Ethernet interface, and the watcher's refusal of
one that appears later. The /sys tree is a fake one; its type numbers are the kernel's ARPHRD_*
(include/uapi/linux/if_arp.h) as /sys/class/net/<name>/type shows them."""
from __future__ import annotations

import logging

import pytest

from netwatchd.config import ConfigError, load_config
from netwatchd.devices.interface_watch import InterfaceWatcher
from netwatchd.interfaces import Interface, choose, read_interfaces, refused

# name: (ifindex, flags, type, extra directory)
SYS = {
    "lo": (1, "0x9", "772", None),
    "eth0": (2, "0x1003", "1", None),
    "eth1": (3, "0x1002", "1", None),  # down
    "br0": (4, "0x1003", "1", "bridge"),
    "bond0": (5, "0x1403", "1", "bonding"),
    "veth1": (6, "0x1003", "1", None),
    "eth0.7": (7, "0x1003", "1", None),
    "tap0": (8, "0x1003", "1", None),
    "tun0": (9, "0x1091", "65534", None),
    "wg0": (10, "0x91", "65534", None),
    "ipip0": (11, "0x91", "768", None),
    "sit1": (12, "0x91", "776", None),
    "gre1": (13, "0x91", "778", None),
    "odd0": (14, "0x1", "999", None),
}
TUN0 = "tun0 is not an Ethernet interface (type 65534 none): the device watcher reads Ethernet headers"


@pytest.fixture
def sys_net(tmp_path):
    root = tmp_path / "net"
    for name, (ifindex, flags, link_type, extra) in SYS.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "ifindex").write_text(f"{ifindex}\n")
        (d / "flags").write_text(f"{flags}\n")
        (d / "type").write_text(f"{link_type}\n")
        if extra:
            (d / extra).mkdir()
    (root / "half").mkdir()  # vanished while being read: no files
    (root / "half" / "ifindex").write_text("15\n")
    return str(root)


def test_read_interfaces_reads_the_type(sys_net):
    found = read_interfaces(sys_net)
    assert sorted(found) == sorted(SYS)
    assert found["tun0"] == Interface("tun0", 9, True, False, False, 65534)
    assert found["lo"] == Interface("lo", 1, True, True, False, 772)
    assert found["br0"] == Interface("br0", 4, True, False, True, 1)


def test_auto_picks_only_up_ethernet_interfaces_that_are_not_masters(sys_net):
    assert sorted(choose("auto", read_interfaces(sys_net))) == ["eth0", "eth0.7", "tap0", "veth1"]
    assert refused("auto", read_interfaces(sys_net)) == {}


def test_a_list_keeps_its_ethernet_names_and_says_why_not_the_others(sys_net):
    available = read_interfaces(sys_net)
    setting = ("tun0", "eth0", "absent0", "eth1", "lo", "gre1", "odd0", "br0")
    assert sorted(choose(setting, available)) == ["br0", "eth0"]
    assert refused(setting, available) == {
        "tun0": TUN0,
        "lo": "lo is not an Ethernet interface (type 772 loopback): the device watcher reads Ethernet headers",
        "gre1": "gre1 is not an Ethernet interface (type 778 gre): the device watcher reads Ethernet headers",
        "odd0": "odd0 is not an Ethernet interface (type 999): the device watcher reads Ethernet headers",
    }


@pytest.mark.parametrize("names, key, problem", [
    ("[eth0, tun0]", "devices.interfaces[1]", TUN0),
    ("[wg0]", "devices.interfaces[0]",
     "wg0 is not an Ethernet interface (type 65534 none): the device watcher reads Ethernet headers"),
    ("[eth0, veth1, ipip0]", "devices.interfaces[2]",
     "ipip0 is not an Ethernet interface (type 768 ipip): the device watcher reads Ethernet headers"),
    ("[sit1]", "devices.interfaces[0]",
     "sit1 is not an Ethernet interface (type 776 sit): the device watcher reads Ethernet headers"),
])
def test_naming_a_non_ethernet_interface_is_a_named_config_error(tmp_path, sys_net, names, key, problem):
    path = tmp_path / "netwatchd.yaml"
    path.write_text(f"devices:\n  interfaces: {names}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(str(path), sys_net=sys_net)
    assert str(raised.value) == f"{path}: {key}: {problem}"


@pytest.mark.parametrize("names", ["auto", "[eth0, absent0]", "[later0]", "[eth1, br0]"])
def test_auto_absent_and_ethernet_interfaces_are_no_error(tmp_path, sys_net, names):
    path = tmp_path / "netwatchd.yaml"
    path.write_text(f"devices:\n  interfaces: {names}\n")
    load_config(str(path), sys_net=sys_net)


class FakeProbe:
    def __init__(self):
        self._attached = {}

    def attach(self, iface):
        self._attached[iface.name] = iface.ifindex

    def detach(self, name, ifindex):
        del self._attached[name]

    def attached(self):
        return sorted(self._attached.items())


def test_the_watcher_refuses_a_listed_interface_that_comes_as_a_tun_once(caplog):
    ifaces = {"eth0": Interface("eth0", 2, True, False, False)}
    watcher = InterfaceWatcher(FakeProbe(), lambda: dict(ifaces))
    setting = ("eth0", "vpn0")
    with caplog.at_level(logging.INFO, logger="netwatchd.devices.interface_watch"):
        watcher.refresh(setting)  # vpn0 does not exist yet: nothing to say
        ifaces["vpn0"] = Interface("vpn0", 3, True, False, False, 65534)  # it comes, as a tun
        watcher.refresh(setting)
        watcher.refresh(setting)  # said once, not every tick
    assert watcher.names() == ["eth0"]
    assert [r.getMessage() for r in caplog.records] == [
        "watching devices on eth0",
        "devices.interfaces: vpn0 is not an Ethernet interface (type 65534 none): the device watcher reads "
        "Ethernet headers; not watching it",
    ]
    caplog.clear()
    del ifaces["vpn0"]
    watcher.refresh(setting)
    ifaces["vpn0"] = Interface("vpn0", 4, True, False, False, 1)  # back, as an Ethernet interface
    with caplog.at_level(logging.INFO, logger="netwatchd.devices.interface_watch"):
        watcher.refresh(setting)
    assert watcher.names() == ["eth0", "vpn0"]
    assert [r.getMessage() for r in caplog.records] == ["watching devices on vpn0"]
