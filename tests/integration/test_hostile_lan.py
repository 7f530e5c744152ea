"""Issue 21's acceptance: a hostile LAN, as root, against the real kernel. A LAN of network
namespaces on a bridge (tests/support/lan.py), one of them an attacker writing forged frames
on its port; a real netwatchd on the SHIPPED config (only time compressed, and
devices.interfaces listing the LAN's ports so the host's own devices cannot disturb exact
counts), a private bus, and a private systemd-journald with journald's own rate limit
(RateLimitBurst 10000 per 30 s, scaled with free space) -- the limit a flood of log lines would
push alerts out of.

  (a) 5000 forged source MACs (half locally, half universally administered) then a real device
      joining on its own port: exactly one mac_flood alert, no new_device for a forged MAC, one
      new_device for the real device as fast as for a device joining a quiet LAN (measured here
      too), the daemon's RSS growth bounded, the inventory at most devices.max_devices.
  (b) unsolicited DNS answers rename nobody; a device that labels its own periodic destination
      update.ubuntu.com through its own resolver still gets its beacon alert (the shipped
      allow_names *.ubuntu.com does not trust DNS names).
  (c) a device sending 300 names of 250 bytes (DNS, HTTP, TLS): its record stays within the
      byte bounds and ListDevices answers.
  (d) an answer-heavy DNS flood (matched answers of 30 records each) with 4096 devices known:
      ticks keep time and the watchdog is fed; what is beyond the device's ring budget is
      throttled, and a device flooding the ring cannot hide another device's new port.
  (f) an ARP flood cycling 40000 addresses between forged MACs: no message of netwatchd's is
      suppressed by journald, every alert in ListAlerts is in the journal.
"""
from __future__ import annotations

import json
import random
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from netwatchd.devices.dns import DnsAnswer, DnsMessage, DnsQuestion
from tests.support import frames
from tests.support.daemon import unvariant
from tests.support.lan import DNS_SERVER, TCP_SINK, Node
from tests.support.oracles import readme_alert_kinds
from tests.support.traffic import CALLER
from tests.support.world import World
from tests.unit.fixtures.app.wire import build_dns, client_hello, sni_extension

pytestmark = pytest.mark.root

TICK = 0.5
LEARNING_SEC = 4
WATCHDOG_SEC = 6
SINK_PORT, DNS_PORT = 7102, 53
BEACON_PERIOD, BEACON_JITTER, BEACON_CONNECTIONS = 1.2, 0.25, 16
FLOOD = 5000
RSS_GROWTH_MB = 48  # the bound the note states: a 5000-MAC flood into a 4096-device inventory
SUPPRESSED = "a596d6fe7bfa4994828e72309e95d61e"  # journald: "Suppressed N messages from ..."

# In a namespace: a datagram to host:9 (discard) every 0.2 s, `count` of them.
TALKER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(b"hello", (sys.argv[1], 9))
    time.sleep(0.2)
"""

# In a namespace: the frames given as hex lines on stdin written to eth0, 100 at a time with a
# millisecond between (the receiving port's backlog, 1000 frames, is never overrun); prints how
# many the kernel took.
PACED_SENDER = r"""
import socket, sys, time
frames = [bytes.fromhex(line) for line in sys.stdin.read().split()]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
sent = 0
for i, frame in enumerate(frames):
    sent += s.send(frame) > 0
    if i % 100 == 99:
        time.sleep(0.001)
print(sent)
"""

# In a namespace: `count` questions to server:53, each waiting for its answer (a resolver
# library's pace), 200 at a time then a 50 ms pause: ~4000 answers a second, which the device
# ring (1 MiB, ~900 snippets) carries between two polls; prints how many were answered.
ASKER = r"""
import socket, struct, sys, time
server, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
answered = 0
for i in range(count):
    if i % 200 == 199:
        time.sleep(0.05)
    name = b"".join(bytes([len(l)]) + l for l in (b"h%d" % i, b"heavy", b"test")) + b"\0"
    s.sendto(struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1", (server, 53))
    try:
        answered += len(s.recv(4096)) > 12
    except socket.timeout:
        pass
print(answered)
"""

# In a namespace: a DNS server answering every A question with 30 addresses: the one given
# (one of the LAN's devices: the answer names it) and 29 in 10.77.1-29.x.
HEAVY_DNS = r"""
import socket, struct, sys
named = socket.inet_aton(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    end = q.index(b"\0", 12) + 5
    answers = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + (named if i == 0 else bytes([10, 77, i, (len(q) + i) & 0xFF])) for i in range(30))
    s.sendto(q[:2] + struct.pack("!HHHHH", 0x8180, 1, 30, 0, 0) + q[12:end] + answers, peer)
"""


def dns_bytes(name: str, ident: int, response: bool, answers=()) -> bytes:
    return build_dns(DnsMessage(ident, response, 0, (DnsQuestion(name, "A"),),
                                tuple(DnsAnswer(name, "A", a, 60) for a in answers)))


def udp_frame(src: Node, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes) -> bytes:
    return frames.eth(dst_mac, src.mac, 0x0800, frames.ipv4(src_ip, dst_ip, 17, frames.udp(sport, dport, payload)))


def forged_macs(n: int, seed: int) -> List[str]:
    """`n` distinct random MACs, macof-style: half locally administered, half universal, unicast."""
    rnd = random.Random(seed)
    out = set()
    while len(out) < n:
        b = bytearray(rnd.getrandbits(8) for _ in range(6))
        b[0] = (b[0] & 0xFC) | (0x02 if len(out) % 2 else 0x00)
        out.add(":".join(f"{x:02x}" for x in b))
    return sorted(out)


@pytest.fixture(scope="module")
def world(make_world):
    """The LAN, the daemon on the shipped config (time compressed; devices.interfaces: the LAN's
    ports, and those of the devices that join later), inside a journald with its own rate limit;
    a beacon in the background from the start; handed over once learning is over."""
    w = make_world("nwhl", journal=True, rate_limited=True)
    lan = w.lan
    w.attacker = lan.add_node("attacker", "00:16:3e:5c:00:01")  # Xen
    w.victim = lan.add_node("victim", "00:1b:21:5c:00:02")  # Intel
    w.caller = lan.add_node("caller", "b8:27:eb:5c:00:03")  # Raspberry Pi
    w.sink = lan.add_node("sink", "00:50:56:5c:00:04")  # VMware: a TCP sink and a resolver
    w.chatty = lan.add_node("chatty", "00:0c:29:5c:00:05")
    # the devices that join later: their ports are watched from the start, when they appear
    w.later_ports = {name: lan.next_port(i) for i, name in enumerate(("quiet", "real"))}
    lan.start(w.sink, sys.executable, "-c", TCP_SINK, str(SINK_PORT), ready="ready")
    lan.start(w.sink, sys.executable, "-c", DNS_SERVER, str(DNS_PORT),
              json.dumps({"update.ubuntu.com": {"A": w.sink.ipv4}}), ready="ready")
    w.start_daemon({"tick_interval_sec": TICK,
                    "alerts": {"learning_period_sec": LEARNING_SEC, "warmup_ticks": 20, "state_save_interval_sec": 1.0},
                    "devices": {"interfaces": lan.ports() + list(w.later_ports.values()), "store_interval_sec": 1.0}},
                   watchdog_usec=WATCHDOG_SEC * 1_000_000, about=("devices.interfaces",))
    for node in (w.attacker, w.victim, w.caller, w.chatty):  # ARP/NDP settled, all known
        lan.send_udp(node, [f"{w.sink.ipv4}:9"], 1)
    # the beacon runs in the background from now on; checked in (b)
    # (a real question, answered, for update.ubuntu.com first)
    lan.start(w.caller, sys.executable, "-c", CALLER, w.sink.ipv4, str(SINK_PORT), "periodic", str(BEACON_CONNECTIONS),
              "7", "/dev/null", str(BEACON_PERIOD), str(BEACON_JITTER), "update.ubuntu.com", w.sink.ipv4)
    w.wait(lambda: not w.d.get_property("Learning"), LEARNING_SEC + 10, "the learning period's end")
    return w


def rss_kib(w: World) -> int:
    status = Path(f"/proc/{w.d.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def join(w: World, name: str, mac: str) -> Node:
    """A device joins: its namespace and port appear; once the daemon watches the port it
    talks to the victim (ARP first, then a datagram every 0.2 s): a device with a vendor
    MAC, talking."""
    node = w.lan.add_node(name, mac)
    assert node.port == w.later_ports[name]
    w.wait(lambda: node.port in w.d.get_property("Interfaces"), 10, f"the watcher on {node.port}")
    w.lan.start(node, sys.executable, "-c", TALKER, w.victim.ipv4, "25")
    return node


def latency_ticks(w: World, alert: Dict, mac: str) -> float:
    return (alert["timestamp_usec"] - w.d.device(mac)["first_seen_usec"]) / 1e6 / TICK


# -- (a) a MAC flood, then a real device -------------------------------------------------------------

def test_a_device_joining_the_quiet_lan_is_one_new_device_within_two_ticks(world):
    w = world
    quiet = join(w, "quiet", "00:1b:63:5c:00:06")  # Apple
    alert = w.alert_for("new_device", f"device:{quiet.mac}")
    w.quiet_latency = latency_ticks(w, alert, quiet.mac)
    assert w.quiet_latency <= 2.5, w.quiet_latency


def test_5000_forged_macs_are_one_mac_flood_alert_and_then_a_real_device_is_still_seen_at_once(world):
    w = world
    rss_before = rss_kib(w)
    macs = forged_macs(FLOOD, seed=21)
    batch = [frames.eth("ff:ff:ff:ff:ff:ff", mac, 0x0806,
                        frames.arp(1, frames.mac_bytes(mac), socket.inet_aton(f"10.77.{100 + i // 250}.{i % 250 + 1}"),
                                   b"\0" * 6, socket.inet_aton("10.77.250.250")))
             for i, mac in enumerate(macs)]
    assert w.lan.send_frames(w.attacker, batch) == FLOOD
    flood = w.alert_for("mac_flood", f"interface:{w.attacker.port}")
    assert int(flood["details"]["count"]) >= 64 and flood["details"]["interface"] == w.attacker.port
    assert set(flood["details"]["samples"].split()) <= set(macs)

    real = join(w, "real", "00:1b:21:5c:00:07")  # Intel
    alert = w.alert_for("new_device", f"device:{real.mac}")
    latency = latency_ticks(w, alert, real.mac)
    assert latency <= max(2.5, w.quiet_latency + 1), (latency, w.quiet_latency)

    w.wait(lambda: len(w.ticks()) and w.ticks()[-1].time_usec > alert["timestamp_usec"] + 4 * TICK * 1e6, 20,
           "four more ticks")
    alerts = w.alerts()
    assert [a for a in alerts if a["kind"] == "mac_flood"] == [flood]
    forged = set(macs)
    assert [a for a in alerts if a["kind"] == "new_device" and a["details"]["mac"] in forged] == []
    assert [a["subject"] for a in alerts if a["kind"] == "new_device"] == [
        f"device:{w.lan.nodes['quiet'].mac}", f"device:{real.mac}"]
    assert w.d.get_property("DeviceCount") <= 4096  # devices.max_devices, as shipped
    growth_mb = (rss_kib(w) - rss_before) / 1024
    print(f"RSS growth through the flood: {growth_mb:.1f} MB; new_device latency {latency:.1f} ticks "
          f"(quiet LAN: {w.quiet_latency:.1f})")
    assert growth_mb < RSS_GROWTH_MB


# -- (b) names only from answers to questions ------------------------------------------------------

def test_unsolicited_dns_answers_rename_nobody(world):
    w = world
    a, v, c = w.attacker, w.victim, w.caller
    forged = [
        # the forgery: a response sent to port 53, "c2.ubuntu.com A <victim's address>"
        udp_frame(a, v.mac, a.ipv4, v.ipv4, 40053, 53, dns_bytes("c2.ubuntu.com", 0x2121, True, [v.ipv4])),
        # answers nobody asked for, sent to the caller "from" the sink's resolver
        udp_frame(a, c.mac, w.sink.ipv4, c.ipv4, 53, 40054, dns_bytes("c2.ubuntu.com", 0x2122, True, [v.ipv4])),
        udp_frame(a, c.mac, w.sink.ipv4, c.ipv4, 53, 40055, dns_bytes("www.ubuntu.com", 0x5151, True, [a.ipv4])),
    ]
    assert w.lan.send_frames(a, forged * 3) == 9
    w.wait(lambda: w.d.device(c.mac)["counters"].get("rx_udp_packets", 0) >= 6, 10, "the forged answers counted")
    assert (w.d.device(v.mac)["hostname"], w.d.device(v.mac)["hostname_source"]) == ("", "")
    assert w.d.device(a.mac)["hostname"] == ""


def test_a_beacon_to_a_destination_its_device_named_update_ubuntu_com_still_alerts(world):
    w = world
    alert = w.alert_for("beacon", f"device:{w.caller.mac}", timeout=BEACON_CONNECTIONS * BEACON_PERIOD * 1.5 + 20)
    assert alert["details"]["destination"] == f"{w.sink.ipv4}:{SINK_PORT}"
    # the name the caller's own lookup gave (an answer to its question: shown, never trusted)
    assert alert["details"]["name"] == "update.ubuntu.com"


# -- (c) a device that sends names without end --------------------------------------------------------

def test_a_device_sending_300_names_of_250_bytes_keeps_a_bounded_record(world):
    w = world
    ch, to = w.chatty, w.victim  # to a device with nothing listening: no answers, no server's fan-out
    name = lambda i: ".".join([f"n{i:03d}" + "a" * 58] + ["b" * 62] * 2 + ["c" * 58, "test"])  # noqa: E731
    assert len(name(0)) >= 250
    for kind in ("dns", "http", "tls"):
        batch = []
        for i in range(300):
            if kind == "dns":
                batch.append(udp_frame(ch, to.mac, ch.ipv4, to.ipv4, 41000 + i, 53, dns_bytes(name(i), i, False)))
            else:
                payload = (f"GET /{'p' * 200} HTTP/1.1\r\nHost: {name(i)}\r\n\r\n".encode() if kind == "http"
                           else client_hello(sni_extension((0, name(i).encode()))))
                batch.append(frames.eth(to.mac, ch.mac, 0x0800, frames.ipv4(
                    ch.ipv4, to.ipv4, 6, frames.tcp(42000 + i, 80 if kind == "http" else 443, payload))))
        # 100 at a time, 0.6 s apart: within the device's snippet budget (256 a second)
        for start in range(0, 300, 100):
            assert w.lan.send_frames(ch, batch[start:start + 100]) == 100
            time.sleep(0.6)
    dev = w.wait(lambda: (lambda d: d if {name(299)} <= set(d["dns_names"]) & set(d["tls_names"]) else None)(
        w.d.device(ch.mac)), 15, "the last names")
    assert sum(map(len, dev["dns_names"])) <= 2048 and sum(map(len, dev["tls_names"])) <= 1024
    assert sum(map(len, dev["http_hosts"])) <= 1024 and sum(len("".join(r)) for r in dev["http_requests"]) <= 2048
    assert ch.mac in {unvariant(d)["mac"] for d in w.d.call("ListDevices")[0]}  # 4096 devices: it answers
    time.sleep(2 * 1.0 + TICK)  # two store intervals: the record on disk
    with sqlite3.connect(f"file:{w.state / 'inventory.sqlite3'}?mode=ro", uri=True) as db:
        sizes = [len(row[0]) for row in db.execute("SELECT data FROM device_metadata WHERE mac = ?", (ch.mac,))]
    assert sizes and sizes[0] <= 12 * 1024, sizes


def test_a_device_flooding_the_ring_cannot_hide_another_devices_new_port(world):
    """chatty sends 6000 DNS questions at once (6 MiB of snippets for a 1 MiB ring) and, amid
    them on the same port, another device's first two frames (an ARP request, then a datagram
    to a port): without the snippet budget the ring is full when that first-seen pattern
    comes, and it is lost. Beyond chatty's budget its snippets are throttled (counted),
    the ring keeps room, and the other device's new port is seen."""
    w = world
    ch, v = w.chatty, w.victim
    other, other_ip = "00:1b:21:5c:00:99", "10.77.0.99"
    throttled = w.d.get_property("Dropped")["device_snippets_throttled"]
    batch = [udp_frame(ch, v.mac, ch.ipv4, v.ipv4, 20000 + i % 30000, 53, dns_bytes(f"q{i}.flood.test", i, False))
             for i in range(6000)]
    batch[3000:3000] = [  # in the middle of the flood: the ring is as full as a flood makes it
        frames.eth("ff:ff:ff:ff:ff:ff", other, 0x0806, frames.arp(
            1, frames.mac_bytes(other), socket.inet_aton(other_ip), b"\0" * 6, socket.inet_aton(w.sink.ipv4))),
        frames.eth(w.sink.mac, other, 0x0800, frames.ipv4(other_ip, w.sink.ipv4, 17, frames.udp(40000, 7777, b"x")))]
    # 100 frames at a time, a millisecond apart: as fast as the port's backlog takes them (one
    # write of all of them would overflow it, and the kernel would drop most before our hook)
    assert int(w.lan.python(ch, PACED_SENDER, stdin="\n".join(f.hex() for f in batch))) == len(batch)

    def new_port():
        listed = {d["mac"]: d for d in map(unvariant, w.d.call("ListDevices")[0])}
        return other in listed and [p for p in w.d.device(other)["recent_peers"] if p[0] == w.sink.ipv4 and p[1] == 7777]

    peers = w.wait(new_port, 10, "the other device's new port")
    assert peers == [[w.sink.ipv4, 7777, "udp", ""]]
    # 256 a second per CPU: at most two CPUs, at most two seconds' budgets
    assert w.d.get_property("Dropped")["device_snippets_throttled"] - throttled >= 6000 - 4 * 256


# -- (d) an answer-heavy DNS flood with the inventory full -----------------------------------------

def test_an_answer_heavy_dns_flood_with_4096_devices_known_keeps_ticks_and_the_watchdog_in_time(world):
    w = world
    assert w.d.get_property("DeviceCount") >= 4000  # the flood left the inventory full
    w.lan.start(w.victim, sys.executable, "-c", HEAVY_DNS, w.chatty.ipv4, ready="ready")
    throttled = w.d.get_property("Dropped")["device_snippets_throttled"]
    since = time.monotonic()
    start_usec = time.time_ns() // 1000
    answered = int(w.lan.python(w.caller, ASKER, w.victim.ipv4, "6000", timeout=120))
    assert answered >= 5900
    end_usec = time.time_ns() // 1000
    w.wait(lambda: w.ticks()[-1].time_usec > end_usec + 2 * TICK * 1e6, 20, "two ticks after the flood")
    times = [t.time_usec for t in w.ticks() if start_usec <= t.time_usec <= end_usec + 2 * TICK * 1e6]
    gaps = [(b - a) / 1e6 for a, b in zip(times, times[1:])]
    assert len(times) >= (end_usec - start_usec) / 1e6 / TICK * 0.8 and max(gaps) < 3 * TICK, gaps
    # fed every WatchdogSec/2 (3 s); systemd would kill the daemon after a gap of WatchdogSec
    ended = time.monotonic()
    feeds = lambda: [t for t, m in zip(w.d.notify.times, w.d.notify.messages)  # noqa: E731
                     if "WATCHDOG=1" in m.split("\n")]
    w.wait(lambda: feeds()[-1] > ended, WATCHDOG_SEC, "a watchdog feed after the flood")
    fed = [t for t, m in zip(w.d.notify.times, w.d.notify.messages)
           if "WATCHDOG=1" in m.split("\n") and t >= since - WATCHDOG_SEC]
    print(f"answer-heavy flood: {answered} answers of 30 records in {(end_usec - start_usec) / 1e6:.1f} s; "
          f"longest tick gap {max(gaps):.2f} s, watchdog gaps {[round(b - a, 2) for a, b in zip(fed, fed[1:])]}")
    assert len(fed) >= 2 and max(b - a for a, b in zip(fed, fed[1:])) < 0.75 * WATCHDOG_SEC, fed
    # the answers within the caller's snippet budget were read, matched and resolved (each names
    # chatty, through the address index); the rest of its questions and answers were throttled
    chatty = w.d.device(w.chatty.mac)
    assert chatty["hostname"].endswith(".heavy.test") and chatty["hostname_source"] == "dns", chatty["hostname"]
    seconds = (end_usec - start_usec) / 1e6
    assert w.d.get_property("Dropped")["device_snippets_throttled"] - throttled >= 2 * answered - 4 * 256 * (seconds + 1)
    assert w.d.proc.poll() is None


# -- (f) an ARP flood cycling addresses under journald's real rate limit -----------------------------

def test_an_arp_flood_cycling_addresses_suppresses_no_log_line_and_every_alert_reaches_the_journal(world):
    w = world
    a = w.attacker
    pair = ["00:16:3e:66:00:01", "00:16:3e:66:00:02"]
    batch = []
    for i in range(20000):  # each address claimed by one forged MAC, then by the other
        spa = socket.inet_aton(f"10.77.{160 + i // 250}.{i % 250 + 1}")
        for mac in pair:
            batch.append(frames.eth("ff:ff:ff:ff:ff:ff", mac, 0x0806,
                                    frames.arp(1, frames.mac_bytes(mac), spa, b"\0" * 6, socket.inet_aton("10.77.250.250"))))
    # and the victim's own address, claimed by the first of them: an ARP spoof inside the flood
    batch.append(frames.eth("ff:ff:ff:ff:ff:ff", pair[0], 0x0806, frames.arp(
        2, frames.mac_bytes(pair[0]), socket.inet_aton(w.victim.ipv4), frames.mac_bytes(w.sink.mac),
        socket.inet_aton(w.sink.ipv4))))
    assert w.lan.send_frames(a, batch) == len(batch)
    try:
        spoof = w.alert_for("address_change", f"ip:{w.victim.ipv4}")
    except AssertionError as e:  # say what the daemon did see: its moves, losses and owners
        moves = [(x["subject"], x["details"].get("old_mac"), x["details"].get("new_mac"))
                 for x in w.alerts() if x["kind"] == "address_change"]
        raise AssertionError(f"{str(e)[:300]}\naddress_change alerts: {moves}\nDropped: "
                             f"{w.d.get_property('Dropped')}\nEventsLost: {w.d.get_property('EventsLost')}\n"
                             f"victim: {w.d.device(w.victim.ipv4)}") from None
    assert spoof["details"]["new_mac"] == pair[0]
    time.sleep(4 * TICK)
    alerts = w.alerts()
    assert {"mac_flood", "new_device", "address_change", "beacon"} <= {x["kind"] for x in alerts}
    for alert in alerts:
        w.journal.wait_for(f"NETWATCHD_ALERT_ID={alert['id']}", timeout=10)
    ids = {m for m, _ in readme_alert_kinds().values()}
    lines = [e for e in w.journal.entries("SYSLOG_IDENTIFIER=netwatchd") if e.get("MESSAGE_ID") not in ids]
    assert w.journal.entries(f"MESSAGE_ID={SUPPRESSED}") == []
    print(f"netwatchd's log lines besides alerts, whole suite: {len(lines)}")
    assert len(lines) < 300, [e["MESSAGE"] for e in lines][-50:]
