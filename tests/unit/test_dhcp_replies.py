"""DHCP server replies, from bytes to the tick's observation: what netwatchd.devices.app_parsers
reads of a server's reply (BOOTP op, options 54, 3 and 6), and what the device engine makes of
a reply a device sends (TickObservation.dhcp_replies: deduplicated, bounded, and no device
record changed). Payloads are built by hand here (tests/unit/fixtures/app/wire.py's bootp);
the expected values are written out.
"""
import socket

import pytest

from netwatchd.alerting.observation import TickObservation
from netwatchd.devices.app_parsers import parse_dhcp
from tests.unit.fixtures.app.wire import bootp
from tests.unit.test_device_monitor import CISCO, EV_SNIPPET, PHONE, env, event, mac_bytes  # noqa: F401 (env)

# OFFER from 192.168.7.1: router 192.168.7.254 (and .253), DNS 9.9.9.9 and 1.1.1.1
OFFER_OPTIONS = (b"\x35\x01\x02" b"\x36\x04\xc0\xa8\x07\x01" b"\x03\x08\xc0\xa8\x07\xfe\xc0\xa8\x07\xfd"
                 b"\x06\x08\x09\x09\x09\x09\x01\x01\x01\x01" b"\xff")
APP_DHCP, UDP = 2, 17


# -- the parser --------------------------------------------------------------------------------

def test_a_server_reply_gives_its_op_server_router_and_dns():
    info = parse_dhcp(bootp(OFFER_OPTIONS, op=2, yiaddr=b"\xc0\xa8\x07\x2a"))
    assert (info.op, info.message_type, info.server_id, info.router, info.dns, info.your_ip) == (
        "reply", "OFFER", "192.168.7.1", "192.168.7.254", ("9.9.9.9", "1.1.1.1"), "192.168.7.42")


@pytest.mark.parametrize("options, field, expected, why", [
    (b"\x03\x03\xc0\xa8\x07\xff", "router", "", "router option of 3 bytes: no address"),
    (b"\x03\x04\x00\x00\x00\x00\xff", "router", "", "router 0.0.0.0 is not given"),
    (b"\x03\x02\xc0\xa8\x03\x02\x07\xfe\xff", "router", "192.168.7.254", "router split in two (RFC 3396)"),
    (b"\x06\x06\x09\x09\x09\x09\x01\x01\xff", "dns", ("9.9.9.9",), "a trailing half address is dropped"),
    (b"\x06\x08\x00\x00\x00\x00\x08\x08\x08\x08\xff", "dns", ("8.8.8.8",), "0.0.0.0 among the DNS servers"),
    (b"\x06\x00\xff", "dns", (), "an empty DNS option"),
    (b"\x06" + bytes([252]) + b"\x01\x02\x03\x04" * 63, "dns", ("1.2.3.4",) * 8, "63 DNS servers: the first 8"),
    (b"\x06\x08\x09\x09\x09\x09\x01\x01", "dns", (), "cut inside the DNS option: nothing of it"),
    (b"\x36\x04\xc0\xa8\x07\x01\x06\x08\x09\x09", "server_id", "192.168.7.1", "cut after the server id"),
    (b"\x36\x05\xc0\xa8\x07\x01\x01\xff", "server_id", "", "server id of 5 bytes: garbage"),
    (b"\x36\x04\xc0\xa8\x07\x01\xff\x03\x04\x0a\x00\x00\x01", "router", "", "a router after END"),
    (b"\x03\xff\x0a\x00\x00\x01", "router", "", "an option longer than what is left: nothing of it"),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_server_options_cut_or_garbled(options, field, expected, why):
    assert getattr(parse_dhcp(bootp(options, op=2)), field) == expected, why


# -- the device engine -------------------------------------------------------------------------

def server_reply(mac, options=OFFER_OPTIONS, client=PHONE, saddr="192.168.7.1", ifindex=7):
    """A reply `mac` sent (TX, from port 67 to 68) to `client`."""
    payload = bootp(options, op=2, mac=mac_bytes(client), yiaddr=socket.inet_aton("192.168.7.42"))
    return event(EV_SNIPPET, mac, app=APP_DHCP, transport=UDP, saddr=saddr, daddr="255.255.255.255",
                 sport=67, dport=68, payload=payload, ifindex=ifindex)


def observed(mon):
    obs = TickObservation(time_usec=1)
    mon.take_observation(obs)
    return obs.dhcp_replies


def test_an_offer_a_device_sends_is_one_reply_of_the_tick(env):
    probe, _, _, mon = env
    ack = OFFER_OPTIONS.replace(b"\x35\x01\x02", b"\x35\x01\x05")
    probe.raw = [server_reply(CISCO), server_reply(CISCO, ack), server_reply(CISCO, client="02:77:00:00:00:09")]
    mon.poll()
    assert observed(mon) == [{"server_mac": CISCO, "server_ip": "192.168.7.1", "interface": "nwh1", "vlan": 0,
                              "router": "192.168.7.254", "dns": ["9.9.9.9", "1.1.1.1"], "message_type": "OFFER"}]
    assert observed(mon) == []  # taken: the next tick starts empty


def test_a_reply_changes_no_device_record(env):
    """The reply names its client (chaddr, yiaddr): the sender may not speak for it."""
    probe, _, _, mon = env
    probe.raw = [server_reply(CISCO, client=PHONE), server_reply(PHONE, client=PHONE)]
    mon.poll()
    assert mon.devices == {}  # the counters find the server; a reply makes and binds nobody
    assert [r["server_mac"] for r in observed(mon)] == [CISCO, PHONE]


@pytest.mark.parametrize("why, raw", [
    ("received (RX): the device is the client", event(EV_SNIPPET, CISCO, app=APP_DHCP, direction=1, transport=UDP,
                                                      sport=67, dport=68, payload=bootp(OFFER_OPTIONS, op=2))),
    ("a NAK hands out nothing", server_reply(CISCO, b"\x35\x01\x06\xff")),
    ("a reply sent from port 68", event(EV_SNIPPET, CISCO, app=APP_DHCP, transport=UDP, sport=68, dport=67,
                                        payload=bootp(OFFER_OPTIONS, op=2))),
    ("garbage", event(EV_SNIPPET, CISCO, app=APP_DHCP, transport=UDP, sport=67, dport=68, payload=b"\x02" * 300)),
])
def test_what_is_no_server_reply(env, why, raw):
    probe, _, _, mon = env
    probe.raw = [raw]
    mon.poll()
    assert observed(mon) == [], why


def test_a_flood_of_forged_servers_is_64_replies_a_tick_and_the_rest_counted(env):
    probe, _, _, mon = env
    probe.raw = [server_reply(f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}") for n in range(1000)]
    mon.poll()
    replies = observed(mon)
    assert len(replies) == 64 and replies[0]["server_mac"] == "02:00:00:00:00:00"
    assert mon.dropped()["dhcp_replies_dropped"] == 1000 - 64
