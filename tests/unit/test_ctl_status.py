"""netwatchctl status: what an operator reads at a glance."""
from netwatchd.ctl.render import format_uptime, render_status


def test_uptime_format():
    assert format_uptime(59) == "00:00:59"
    assert format_uptime(90061) == "1d 01:01:01"
    assert format_uptime(-5) == "00:00:00"  # a clock step never prints nonsense


def test_status_shows_uptime_interfaces_devices_and_packets_per_protocol():
    props = {"Version": "0.1.0", "StartedAtUSec": 1_000_000_000_000, "ProgramsAttached": ["sys_exit_connect"],
             "Interfaces": ["eth0", "wlan0"], "ProtocolTotals": {"arp": 2, "tcp": 5, "udp": 0}, "DeviceCount": 3,
             "ConnectAttempts": 7, "EventsLost": 1, "DeviceEventsLost": 2, "MalformedFrames": 4}
    lines = [line.strip() for line in render_status(props, now_usec=1_000_000_000_000 + 3_725_000_000).splitlines()]
    assert lines[1].endswith("(up 01:02:05)")
    assert "Interfaces: eth0, wlan0" in lines
    assert "Devices: 3" in lines
    assert "Packets: arp 2, tcp 5" in lines
    assert "Events lost: 1 connect records, 2 device events, 4 malformed frames" in lines


def test_status_names_the_kernel_and_what_it_gives_another_way():
    props = {"KernelRelease": "6.1.0-57-amd64",
             "KernelFallbacks": ["TC classifier on clsact filters (no TCX links before Linux 6.6)"]}
    assert "Kernel: 6.1.0-57-amd64 (TC classifier on clsact filters (no TCX links before Linux 6.6))" in [
        line.strip() for line in render_status(props, now_usec=1).splitlines()]
    assert "Kernel: 6.18.0 " not in render_status({"KernelRelease": "6.18.0", "KernelFallbacks": []}, now_usec=1)


def test_status_says_who_this_host_is_and_how_delivery_to_alertmanager_goes():
    props = {"HostId": "0123456789abcdef0123456789abcdef", "Segments": {"eth0": "192.0.2.0/24@02:00:00:00:00:01"},
             "FleetDelivery": {"spooled": 5, "firing": 4, "delivered": 12, "dropped": 1,
                               "failed http://am:9093 connection refused": 3}}
    lines = [line.strip() for line in render_status(props, now_usec=1).splitlines()]
    assert "Host id: 0123456789abcdef0123456789abcdef (segments: eth0 192.0.2.0/24@02:00:00:00:00:01)" in lines
    assert "Fleet: 4 alerts firing, 5 spooled, 12 delivered, 1 dropped (spool full)" in lines
    assert "Failed sends: 3 http://am:9093 connection refused" in lines
    off = [line.strip() for line in render_status(dict(props, FleetDelivery={}), now_usec=1).splitlines()]
    assert "Fleet: off (fleet.alertmanager_urls is empty)" in off
