"""Who this host is to a fleet (netwatchd/api/fleet_identity.py): its host id, and each watched
interface's segment, computed alike by every host of one LAN from /proc/net/route and
/proc/net/arp (fixtures here) without their talking to each other."""
import ipaddress
import logging
import socket
import struct

import pytest

from netwatchd.api.fleet_identity import IdentityReader, Route, parse_arp, parse_routes, segment_of
from netwatchd.read_model import HostIdentity

HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def hexle(address: str) -> str:
    """An IPv4 address as /proc/net/route writes it: host byte order (little-endian), in hex."""
    return "%08X" % struct.unpack("<I", socket.inet_aton(address))[0]


def route_line(iface, dest, gateway, flags, mask, metric=0):
    return f"{iface}\t{hexle(dest)}\t{hexle(gateway)}\t{flags:04X}\t0\t0\t{metric}\t{hexle(mask)}\t0\t0\t0\n"


ROUTES = (HEADER
          + route_line("eth0", "0.0.0.0", "192.168.1.1", 0x0003, "0.0.0.0", 100)  # default via 192.168.1.1
          + route_line("eth0", "192.168.1.0", "0.0.0.0", 0x0001, "255.255.255.0", 100)  # on-link
          + route_line("eth1", "10.10.0.0", "0.0.0.0", 0x0001, "255.255.255.0")  # no gateway there
          + "eth2\tnot-hex\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # malformed: skipped
          + "truncated line\n")
ARP = ("IP address       HW type     Flags       HW address            Mask     Device\n"
       "192.168.1.1      0x1         0x2         52:54:00:AB:CD:EF     *        eth0\n"
       "192.168.1.77     0x1         0x0         00:00:00:00:00:00     *        eth0\n"
       "10.10.0.5        0x1         0x2         02:00:00:00:00:05     *        eth1\n")
SEGMENT = "192.168.1.0/24@52:54:00:ab:cd:ef"


def test_the_fixture_encodes_like_the_kernel():
    assert hexle("192.168.1.1") == "0101A8C0"
    assert hexle("255.255.255.0") == "00FFFFFF"


def test_parse_routes():
    assert parse_routes(ROUTES) == [
        Route("eth0", ipaddress.IPv4Network("0.0.0.0/0"), "192.168.1.1"),
        Route("eth0", ipaddress.IPv4Network("192.168.1.0/24"), None),
        Route("eth1", ipaddress.IPv4Network("10.10.0.0/24"), None),
    ]


def test_parse_routes_of_nothing():
    assert parse_routes("") == []
    assert parse_routes(HEADER) == []


def test_a_gateway_column_without_the_gateway_flag_is_on_link():
    text = HEADER + route_line("eth0", "192.168.1.0", "192.168.1.254", 0x0001, "255.255.255.0")
    assert parse_routes(text) == [Route("eth0", ipaddress.IPv4Network("192.168.1.0/24"), None)]


def test_a_non_contiguous_mask_is_skipped():
    text = HEADER + route_line("eth0", "192.168.1.0", "0.0.0.0", 0x0001, "255.0.255.0")
    assert parse_routes(text) == []


def test_an_overlong_hex_field_is_skipped_too():
    text = HEADER + "eth0\t1FFFFFFFF\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" + ROUTES.split("\n", 1)[1]
    assert parse_routes(text) == parse_routes(ROUTES)


def test_parse_arp_keeps_complete_entries_lower_case():
    assert parse_arp(ARP) == {("192.168.1.1", "eth0"): "52:54:00:ab:cd:ef",
                              ("10.10.0.5", "eth1"): "02:00:00:00:00:05"}


def test_parse_arp_skips_malformed_and_zero_macs():
    text = ("IP address HW type Flags HW address Mask Device\n"
            "192.168.1.2 0x1 zz 52:54:00:00:00:02 * eth0\n"
            "192.168.1.3 0x1 0x2\n"
            "192.168.1.4 0x1 0x6 00:00:00:00:00:00 * eth0\n"
            "192.168.1.5 0x1 0x6 52:54:00:00:00:05 * eth0\n")  # 0x6: complete and permanent
    assert parse_arp(text) == {("192.168.1.5", "eth0"): "52:54:00:00:00:05"}


# -- the segment ----------------------------------------------------------------------------------

def test_segment_is_the_prefix_and_the_gateway_mac():
    assert segment_of("eth0", "host-a", parse_routes(ROUTES), parse_arp(ARP)) == SEGMENT


def test_segment_is_the_prefix_alone_when_the_gateway_mac_is_unknown():
    arp = ARP.replace("0x2         52:54:00:AB:CD:EF", "0x0         00:00:00:00:00:00")
    assert parse_arp(arp).get(("192.168.1.1", "eth0")) is None
    assert segment_of("eth0", "host-a", parse_routes(ROUTES), parse_arp(arp)) == "192.168.1.0/24"
    assert segment_of("eth0", "host-a", parse_routes(ROUTES), {}) == "192.168.1.0/24"


def test_the_gateway_mac_must_be_known_on_that_interface():
    arp = {("192.168.1.1", "eth1"): "52:54:00:ab:cd:ef"}
    assert segment_of("eth0", "host-a", parse_routes(ROUTES), arp) == "192.168.1.0/24"


def test_segment_is_the_prefix_alone_without_a_gateway():
    assert segment_of("eth1", "host-a", parse_routes(ROUTES), parse_arp(ARP)) == "10.10.0.0/24"


def test_a_bridge_port_has_its_bridges_segment():
    routes = ROUTES.replace("eth0\t", "br0\t")
    arp = ARP.replace("eth0\n", "br0\n")
    assert segment_of("eth0", "host-a", parse_routes(routes), parse_arp(arp), master="br0") == SEGMENT
    assert segment_of("eth0", "host-a", parse_routes(routes), parse_arp(arp)) == "host-a/eth0"


def test_the_bridge_is_read_from_sys_class_net(files, tmp_path):
    port = tmp_path / "net" / "eth5"
    port.mkdir(parents=True)
    (tmp_path / "net" / "br0").mkdir()
    (port / "master").symlink_to("../br0")
    (tmp_path / "route").write_text(ROUTES.replace("eth0\t", "br0\t"))
    (tmp_path / "arp").write_text(ARP.replace("eth0\n", "br0\n"))
    assert reader(files).read(["eth5"]).segments == (("eth5", SEGMENT),)


def test_segment_without_an_ipv4_route_is_this_hosts_own():
    assert segment_of("wlan0", "host-a", parse_routes(ROUTES), parse_arp(ARP)) == "host-a/wlan0"
    assert segment_of("eth0", "host-a", [], {}) == "host-a/eth0"


def test_the_lans_own_route_wins_over_a_wider_summary_and_host_routes():
    text = (ROUTES
            + route_line("eth0", "192.168.0.0", "0.0.0.0", 0x0001, "255.255.0.0")  # a wider summary
            + route_line("eth0", "192.168.1.9", "0.0.0.0", 0x0005, "255.255.255.255"))  # a host route
    assert segment_of("eth0", "host-a", parse_routes(text), parse_arp(ARP)) == SEGMENT


def test_the_default_route_names_the_gateway_before_a_narrower_one():
    text = ROUTES + route_line("eth0", "10.20.0.0", "192.168.1.2", 0x0003, "255.255.0.0")
    arp = dict(parse_arp(ARP))
    arp[("192.168.1.2", "eth0")] = "52:54:00:00:00:02"
    assert segment_of("eth0", "host-a", parse_routes(text), arp) == SEGMENT


def test_two_hosts_of_one_lan_compute_the_same_segment():
    routes, arp = parse_routes(ROUTES), parse_arp(ARP)
    assert segment_of("eth0", "aaaa1111", routes, arp) == segment_of("eth0", "bbbb2222", routes, arp) == SEGMENT
    assert segment_of("eth1", "aaaa1111", routes, arp) == segment_of("eth1", "bbbb2222", routes, arp)
    # ...but an interface without IPv4 is each host's own: never merged
    assert segment_of("wlan0", "aaaa1111", routes, arp) != segment_of("wlan0", "bbbb2222", routes, arp)


def test_another_site_with_the_same_prefix_is_another_segment():
    other = ARP.replace("52:54:00:AB:CD:EF", "52:54:00:99:99:99")
    assert segment_of("eth0", "h", parse_routes(ROUTES), parse_arp(other)) == "192.168.1.0/24@52:54:00:99:99:99"


# -- reading the files -----------------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    routes = tmp_path / "route"
    routes.write_text(ROUTES)
    arp = tmp_path / "arp"
    arp.write_text(ARP)
    return machine_id, routes, arp


def reader(files):
    """A reader of the fixture's files; its /sys/class/net is the fixture's own (empty: no bridges)."""
    return IdentityReader(*(str(p) for p in files), sys_net=str(files[0].parent / "net"))


def test_identity_from_the_files(files):
    got = reader(files).read(["eth0", "eth1", "wlan0"])
    host = "0123456789abcdef0123456789abcdef"
    assert got == HostIdentity(host=host, hostname=socket.gethostname(),
                               segments=(("eth0", SEGMENT), ("eth1", "10.10.0.0/24"), ("wlan0", f"{host}/wlan0")))
    assert got.segment_of("eth1") == "10.10.0.0/24"


def test_host_id_override_wins(files):
    got = reader(files).read(["eth0", "wlan0"], host_id="rack3-node7")
    assert got.host == "rack3-node7"
    assert dict(got.segments) == {"eth0": SEGMENT, "wlan0": "rack3-node7/wlan0"}


def test_segment_override_applies_to_every_interface(files):
    got = reader(files).read(["eth0", "eth1", "wlan0"], segment="office-lan")
    assert got.segments == (("eth0", "office-lan"), ("eth1", "office-lan"), ("wlan0", "office-lan"))


def test_an_empty_machine_id_falls_back_to_the_hostname(files, caplog):
    files[0].write_text("\n")
    r = reader(files)
    with caplog.at_level(logging.INFO, logger="netwatchd.api.fleet_identity"):
        first = r.read(["eth0"])
        second = r.read(["eth0"])
    assert first.host == second.host == socket.gethostname()
    said = [rec.getMessage() for rec in caplog.records if "set fleet.host_id" in rec.getMessage()]
    assert len(said) == 1, "said once, not at every read"


def test_a_missing_machine_id_falls_back_to_the_hostname(files):
    files[0].unlink()
    assert reader(files).read(["eth0"]).host == socket.gethostname()


def test_missing_proc_files_give_own_segments(files):
    files[1].unlink()
    files[2].unlink()
    got = reader(files).read(["eth0"])
    assert got.segments == (("eth0", f"{got.host}/eth0"),)


def test_the_identity_follows_the_files(files):
    r = reader(files)
    assert r.read(["eth0"]).segment_of("eth0") == SEGMENT
    files[2].write_text(ARP.replace("52:54:00:AB:CD:EF", "52:54:00:11:11:11"))  # another gateway (DHCP)
    assert r.read(["eth0"]).segment_of("eth0") == "192.168.1.0/24@52:54:00:11:11:11"


def test_no_interfaces_no_segments(files):
    got = reader(files).read([])
    assert got.segments == () and got.segment_of("eth0") == ""


def test_a_gateway_mac_once_known_is_kept_when_its_neighbour_entry_goes(files):
    machine_id, routes, arp = files
    r = reader(files)
    assert r.read(["eth0"]).segments == (("eth0", SEGMENT),)
    arp.write_text(ARP.splitlines(keepends=True)[0])  # the kernel forgot the idle entry
    assert r.read(["eth0"]).segments == (("eth0", SEGMENT),)
    arp.write_text(ARP.replace("52:54:00:AB:CD:EF", "52:54:00:00:00:99"))  # the router replaced
    assert r.read(["eth0"]).segments == (("eth0", "192.168.1.0/24@52:54:00:00:00:99"),)


def test_the_inventory_names_the_gateway_before_the_kernel_does(files):
    machine_id, routes, arp = files
    arp.write_text(ARP.splitlines(keepends=True)[0])
    asked = []
    r = IdentityReader(*(str(p) for p in files), sys_net=str(files[0].parent / "net"),
                       neighbour=lambda ip: asked.append(ip) or ("52:54:00:AB:CD:EF" if ip == "192.168.1.1" else ""))
    assert r.read(["eth0"]).segments == (("eth0", SEGMENT),)
    assert asked == ["192.168.1.1"]
