"""Slow scans (netwatchd/alerting/scan_windows.py) on synthetic time, and their path through the
alerting core: distinct ports per host and local hosts per port over a 300 s window, one alert
per (device, kind, target) per cooldown, bounded tables, quiet while learning, quiet on a fast
scan already reported as fan_out, and quiet on a synthetic day of a quiet host's traffic.
Expected values are written out here (Zeek's 15 ports / 25 hosts in 5 minutes), never read from
the code under test."""
import numpy as np

from netwatchd.alerting.alerts import AlertIds
from netwatchd.alerting.core import AlertingCore
from netwatchd.alerting.observation import TickObservation
from netwatchd.alerting.scan_windows import Bars, ScanWindows
from netwatchd.config import AlertsConfig, BeaconsConfig
from netwatchd.devices.probes import TickProbes, is_probe

SEC = 1_000_000
T0 = 1_700_000_000 * SEC
SCANNER = "00:50:56:aa:bb:01"
SOURCE = f"device:{SCANNER}"  # what the core hands the windows for a device
TARGET = "10.0.0.5"
SHIPPED = Bars(window_sec=300, ports_per_host=15, hosts_per_port=25, cooldown_sec=600)


def run(windows, probes_at, bars=SHIPPED, alerting=True, quiet=lambda source: False):
    """probes_at: {second: {mac: [[host, port, transport], ...]}}, ticked every second from 0
    to the last second given; the alerts raised, with the second each was raised in."""
    ids = AlertIds(T0)
    raised = []
    for sec in range(max(probes_at) + 1):
        for a in windows.tick(probes_at.get(sec, {}), T0 + sec * SEC, bars, ids, alerting, quiet):
            raised.append((sec, a))
    return raised


def vertical(ports, every_sec, host=TARGET, source=SOURCE):
    return {int(i * every_sec): {source: [[host, port, "tcp"]]} for i, port in enumerate(ports)}


def test_forty_ports_at_one_every_3_s_is_exactly_one_port_scan_within_the_window():
    raised = run(ScanWindows(), vertical(range(20, 60), 3))
    assert len(raised) == 1
    sec, alert = raised[0]
    assert sec == 14 * 3  # the 15th port, 42 s in: well within the 300 s window
    assert (alert.kind, alert.subject) == ("port_scan", f"device:{SCANNER}")
    assert alert.details["host"] == TARGET and alert.details["count"] == "15"
    assert alert.details["window_sec"] == "300" and alert.details["mac"] == SCANNER
    assert alert.details["ports"].split()[:3] == ["20/tcp", "21/tcp", "22/tcp"]
    assert TARGET in alert.message and "15 ports" in alert.message and "300 s" in alert.message


def test_the_same_forty_ports_spread_over_30_minutes_raise_nothing():
    assert run(ScanWindows(), vertical(range(20, 60), 45)) == []  # 40 ports x 45 s = 30 minutes


def test_thirty_local_hosts_on_one_port_in_two_minutes_is_one_host_scan():
    probes = {i * 4: {SOURCE: [[f"192.168.1.{10 + i}", 445, "tcp"]]} for i in range(30)}
    raised = run(ScanWindows(), probes)
    assert [(a.kind, a.subject, a.details["port"], a.details["count"]) for _, a in raised] == [
        ("host_scan", f"device:{SCANNER}", "445/tcp", "25")]
    assert raised[0][0] == 24 * 4
    assert raised[0][1].details["hosts"].split()[0] == "192.168.1.10"


def test_public_hosts_on_one_port_are_browsing_not_a_host_scan():
    probes = {i: {SOURCE: [[f"198.18.{i}.1", 443, "tcp"]]} for i in range(100)}
    assert run(ScanWindows(), probes) == []


def test_a_scan_that_goes_on_is_quiet_for_the_cooldown_then_alerts_again():
    raised = run(ScanWindows(), vertical(range(1, 1001), 1))  # 1000 ports, one a second
    assert [sec for sec, _ in raised] == [14, 614]  # the bar at the 15th; again after 600 s


def test_one_alert_per_tick_names_the_other_targets_at_the_bar():
    probes = {i: {SOURCE: [["10.0.0.5", 100 + i, "tcp"], ["10.0.0.6", 100 + i, "tcp"]]} for i in range(20)}
    raised = run(ScanWindows(), probes)
    assert len(raised) == 1
    assert raised[0][1].details["host"] in ("10.0.0.5", "10.0.0.6")
    assert raised[0][1].details["other_targets"] in ("10.0.0.5", "10.0.0.6")


def test_a_pair_reported_again_counts_once():
    probes = {i: {SOURCE: [[TARGET, 22 + i % 14, "tcp"]]} for i in range(200)}  # 14 ports, again and again
    assert run(ScanWindows(), probes) == []


def test_ipv6_hosts_and_udp_ports_count_too():
    probes = {i: {SOURCE: [["fd00::5", 1000 + i, "udp"]]} for i in range(16)}
    (sec, alert), = run(ScanWindows(), probes)
    assert (sec, alert.details["host"], alert.details["ports"].split()[0]) == (14, "fd00::5", "1000/udp")


def test_learning_records_nothing_so_its_end_raises_nothing():
    w = ScanWindows()
    run(w, vertical(range(20, 60), 1), alerting=False)
    assert w.pairs() == 0
    assert run(w, {0: {SOURCE: [[TARGET, 80, "tcp"]]}}) == []


def test_a_device_whose_fan_out_is_cooling_is_quiet():
    assert run(ScanWindows(), vertical(range(20, 60), 1), quiet=lambda source: source == SOURCE) == []


def test_a_device_forging_100k_pairs_stays_within_its_bound_and_the_drops_are_counted():
    w = ScanWindows(max_devices=64, max_pairs=4096)
    probes = {i: {SOURCE: [[f"10.{i}.{j >> 8}.{j & 255}", 1 + j % 7, "tcp"] for j in range(1000)]}
              for i in range(100)}  # 100k distinct pairs in 100 s
    run(w, probes)
    assert w.pairs() == 4096
    assert w.dropped == 100_000 - 4096
    assert w.nbytes() < 4096 * 80  # rows and keys: well under 100 bytes a pair


def test_forged_macs_beyond_the_device_bound_push_out_the_least_recently_active():
    w = ScanWindows(max_devices=16, max_pairs=4096)
    run(w, {0: {SOURCE: [[TARGET, p, "tcp"] for p in range(1, 11)]}})
    forged = {1 + i: {f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}": [["10.9.9.9", 80, "tcp"]]} for i in range(40)}
    run(w, forged)
    assert len(w.slots) == 16 and SOURCE not in w.slots
    assert w.pairs() == 16 and w.dropped == 10 + 24  # the scanner's 10, then 24 forged ones, forgotten
    raised = run(w, {0: {SOURCE: [[TARGET, p, "tcp"] for p in range(11, 26)]}})
    assert [a.details["count"] for _, a in raised] == ["15"]  # back, it starts afresh


def test_forged_macs_with_many_pairs_each_keep_the_total_within_its_bound():
    w = ScanWindows(max_devices=4096, max_pairs=4096, max_total=10_000)
    run(w, {0: {SOURCE: [[TARGET, p, "tcp"] for p in range(1, 11)]}})
    forged = {1 + i: {f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}": [[f"10.7.{i}.{j}", 80, "tcp"] for j in range(200)]}
              for i in range(100)}  # 20k pairs from 100 made-up MACs, one a second
    run(w, forged)
    assert w.pairs() <= 10_000 and SOURCE not in w.slots  # the least recently probing went first
    assert w.pairs() + w.dropped == 20_000 + 10
    raised = run(w, {0: {SOURCE: [[TARGET, p, "tcp"] for p in range(11, 26)]}})  # room is made for it
    assert [a.details["count"] for _, a in raised] == ["15"] and w.pairs() <= 10_000


def test_pairs_leave_the_window_and_their_memory_with_them():
    w = ScanWindows()
    run(w, {0: {SOURCE: [[TARGET, p, "tcp"] for p in range(1, 11)]}, 400: {}})
    assert w.pairs() == 0 and len(w.seen) == 0 and len(w.ports_of_host) == 0 and not w.chunks


def test_an_arp_sweep_of_a_slash_24_in_two_seconds_is_one_address_sweep_naming_the_range():
    """`nmap -sn 192.168.7.0/24` on the LAN: ARP requests for 254 addresses no known device uses
    (the monitor hands in only those) -> one address_sweep, not a host_scan or port_scan too."""
    targets = [f"192.168.7.{i}" for i in range(1, 255)]
    probes = {0: {SOURCE: [[t, 0, "arp"] for t in targets[:127]]}, 1: {SOURCE: [[t, 0, "arp"] for t in targets[127:]]}}
    raised = run(ScanWindows(), probes)
    assert [(sec, a.kind, a.subject) for sec, a in raised] == [(0, "address_sweep", f"device:{SCANNER}")]
    alert = raised[0][1]
    assert {k: alert.details[k] for k in ("by", "first", "last", "count", "window_sec", "mac")} == {
        "by": "arp", "first": "192.168.7.1", "last": "192.168.7.127", "count": "127", "window_sec": "300",
        "mac": SCANNER}
    assert "192.168.7.1 .. 192.168.7.127" in alert.message and "by arp" in alert.message


def test_a_ping_sweep_slowly_and_twenty_arp_targets_are_as_the_bar_says():
    slow = {i * 10: {SOURCE: [[f"10.9.0.{i + 1}", 0, "icmp"]]} for i in range(26)}  # one every 10 s
    assert [(sec, a.kind, a.details["by"], a.details["count"]) for sec, a in run(ScanWindows(), slow)] == [
        (240, "address_sweep", "icmp", "25")]
    few = {i: {SOURCE: [[f"10.9.1.{i + 1}", 0, "arp"]]} for i in range(20)}
    assert run(ScanWindows(), few) == []
    public = {0: {SOURCE: [[f"198.51.100.{i}", 0, "icmp"] for i in range(1, 60)]}}  # not the local network
    assert run(ScanWindows(), public) == []


def test_what_counts_as_a_probe():
    assert is_probe("tcp", "10.0.0.5", 40000, 22)
    assert is_probe("udp", "10.0.0.5", 40000, 161)  # a client port to a service
    assert not is_probe("udp", "10.0.0.5", 53, 40000)  # a DNS server answering a client
    assert not is_probe("udp", "224.0.0.251", 5353, 5353) and not is_probe("udp", "255.255.255.255", 68, 67)
    assert is_probe("arp", "10.0.0.5", 0, 0) and is_probe("icmp", "10.0.0.5", 0, 0)  # addresses asked for
    assert is_probe("icmpv6", "fd00::5", 0, 0) and not is_probe("igmp", "10.0.0.5", 0, 0)
    probes = TickProbes()
    for port in range(600):
        probes.add(SCANNER, "tcp", TARGET, 40000, port)
    assert len(probes.take()[SCANNER]) == 512 and probes.dropped == 88 and probes.take() == {}


# -- through the alerting core, as the daemon and `netwatchctl replay` run it ---------------------

def core_ticks(core, probes_at, seconds, start=T0):
    out = []
    for sec in range(seconds):
        obs = TickObservation(time_usec=start + sec * SEC, device_probes=probes_at.get(sec, {}))
        out += core.tick(obs)
    return out


def test_the_core_raises_a_slow_scan_after_learning_and_counts_the_drops():
    cfg = AlertsConfig(learning_period_sec=60)
    core = AlertingCore(cfg, BeaconsConfig(), T0, T0)
    during = core_ticks(core, vertical(range(20, 60), 1, source=SCANNER), 59)
    after = core_ticks(core, vertical(range(20, 60), 3, source=SCANNER), 130, start=T0 + 60 * SEC)
    assert during == [] and [(a.kind, a.details["count"]) for a in after] == [("port_scan", "15")]
    assert core.dropped()["scan_pairs_dropped"] == 0


def test_a_fast_scan_is_one_fan_out_not_also_a_port_scan():
    core = AlertingCore(AlertsConfig(learning_period_sec=0, warmup_ticks=10), BeaconsConfig(), T0, T0)
    for sec in range(30):  # a quiet device learns its normal
        core.tick(TickObservation(time_usec=T0 + sec * SEC, device_new_ports={SCANNER: 0}))
    scan = TickObservation(time_usec=T0 + 30 * SEC, device_new_ports={SCANNER: 300}, device_new_peers={SCANNER: 1},
                           device_probes={SCANNER: [[TARGET, p, "tcp"] for p in range(1, 301)]})
    assert [a.kind for a in core.tick(scan)] == ["fan_out"]


def quiet_host_probes(hours: float, seed: int):
    """A quiet host's connection starts per second (the test keeps each pair's first, as the
    kernel's first-seen LRU does): NTP, the local resolver, browsing among 300 sites on 443
    (public), apt, IMAP polls, ssh to a few LAN hosts; and a monitor polling 36 LAN peers on one
    port, every 5-15 s, then faster (steady, jittered, ramping)."""
    rng = np.random.default_rng(seed)
    ticks = {}

    def add(sec, host, port):
        ticks.setdefault(int(sec), {}).setdefault(SOURCE, []).append([host, port, "tcp"])

    end = int(hours * 3600)
    t = 0.0
    while t < end:  # browsing sessions: a few of 300 sites each, Zipf-popular
        t += rng.exponential(300)
        for _ in range(rng.integers(1, 12)):
            add(t, f"198.51.{rng.zipf(1.3) % 300 >> 8}.{rng.zipf(1.3) % 300 & 255}", 443)
            add(t, "127.0.0.53", 53)
    for sec in range(0, end, 64):
        add(sec, "192.0.2.123", 123)
    for sec in range(0, end, 600):
        add(sec, "203.0.113.143", 993)
        add(sec + 1, "151.101.2.132", 80)
    t = 0.0
    while t < end:
        t += rng.exponential(900)
        add(t, f"10.0.0.{rng.integers(2, 9)}", 22)
    period = 10.0  # a monitor polling 36 LAN peers on 9100, steady then jittered then ramping
    t = 0.0
    while t < end:
        for peer in range(36):
            add(t + rng.uniform(0, 2), f"10.1.0.{peer + 2}", 9100)
        t += period * rng.uniform(0.5, 1.5)
        period = max(2.0, period * 0.999)
    return ticks, end


LEARNING_SEC = 3600  # alerts.learning_period_sec as shipped: the host was there at the first start


def test_a_synthetic_day_of_a_quiet_host_raises_nothing():
    """The monitor's 36 peers on one port were first seen in the learning period; a new monitor
    polling as many LAN hosts after it is a host_scan (from the wire it is one)."""
    ticks, end = quiet_host_probes(24, seed=4)
    w, ids = ScanWindows(), AlertIds(T0)
    seen = set()
    raised = []
    for sec in range(0, end, 1):  # the kernel reports a pair first-seen once: model that too
        probes = {mac: [p for p in pairs if tuple(p) not in seen] for mac, pairs in ticks.get(sec, {}).items()}
        seen.update(tuple(p) for pairs in probes.values() for p in pairs)
        raised += w.tick({m: p for m, p in probes.items() if p}, T0 + sec * SEC, SHIPPED, ids, sec >= LEARNING_SEC)
    assert raised == []
    assert len(seen) > 250  # the day did probe: distinct pairs first seen (285)


def test_a_fan_out_that_needs_a_second_tick_still_makes_one_alert():
    """Above fan_out_floor but not a burst: the fan_out comes with the second anomalous tick, and
    the port_scan the first tick reached waits for it, then stays quiet."""
    core = AlertingCore(AlertsConfig(learning_period_sec=0, warmup_ticks=10), BeaconsConfig(), T0, T0)
    for sec in range(30):
        core.tick(TickObservation(time_usec=T0 + sec * SEC, device_new_ports={SCANNER: 0}))
    raised = []
    for n, sec in enumerate((30, 31)):  # 40 new ports a tick: anomalous, below burst_fan_out (100)
        ports = range(1 + 40 * n, 41 + 40 * n)
        raised += core.tick(TickObservation(time_usec=T0 + sec * SEC, device_new_ports={SCANNER: 40},
                                            device_probes={SCANNER: [[TARGET, p, "tcp"] for p in ports]}))
    raised += core_ticks(core, {}, 3, start=T0 + 32 * SEC)
    assert [a.kind for a in raised] == ["fan_out"]


def test_a_port_scan_waiting_for_a_fan_out_that_never_comes_is_raised_a_tick_later():
    w = ScanWindows()
    probes = {0: {SOURCE: [[TARGET, p, "tcp"] for p in range(1, 41)]}}
    ids = AlertIds(T0)
    first = w.tick(probes[0], T0, SHIPPED, ids, True, pending=lambda mac: True)
    second = w.tick({}, T0 + SEC, SHIPPED, ids, True)
    assert first == [] and [(a.kind, a.details["count"]) for a in second] == [("port_scan", "40")]


def test_a_scan_reported_before_a_restart_stays_quiet_for_its_cooldown():
    before = run(ScanWindows(), vertical(range(20, 40), 1))
    assert len(before) == 1
    w = ScanWindows()  # a restart: the window is empty, the alert log restored
    w.remember([alert for _, alert in before])
    assert run(w, vertical(range(40, 60), 1)) == []  # the same host again within 600 s
