"""Ethernet frames built byte by byte, for injecting well-formed and malformed traffic on the
device tests' LAN (tests/support/lan.py sends them with an AF_PACKET socket)."""
from __future__ import annotations

import random
import socket
import struct
from typing import List


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def eth(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload


def vlan(tci: int, ethertype: int, payload: bytes) -> bytes:
    """A VLAN tag's last four bytes (TCI, inner type) before `payload`; the TPID is the outer
    type (0x8100/0x88a8) the caller puts in front."""
    return struct.pack("!HH", tci, ethertype) + payload


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ihl: int = 5, tot_len: int = 0, version: int = 4,
         frag: int = 0, options: bytes = b"") -> bytes:
    tot_len = tot_len or 4 * ihl + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, tot_len, 0x1234, frag, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst)) + options
    header = header[:10] + struct.pack("!H", checksum(header[:20])) + header[12:]
    return header + payload


def ipv6(src: str, dst: str, nexthdr: int, payload: bytes, payload_len: int = -1) -> bytes:
    plen = len(payload) if payload_len < 0 else payload_len
    return struct.pack("!IHBB16s16s", 6 << 28, plen, nexthdr, 64, socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload


def udp(sport: int, dport: int, payload: bytes, length: int = 0) -> bytes:
    return struct.pack("!HHHH", sport, dport, length or 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, payload: bytes, flags: int = 0x18, doff: int = 5) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, doff << 4, flags, 65535, 0, 0) + \
        b"\0" * (4 * doff - 20 if doff > 5 else 0) + payload


def arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes, hlen: int = 6, plen: int = 4) -> bytes:
    return struct.pack("!HHBBH", 1, 0x0800, hlen, plen, op) + sha + spa + tha + tpa


def garbage(src: str, src_random: str, dst: str, victim_mac: str, lan_v4: str, lan_v6: str,
            seed: int = 3) -> List[bytes]:
    """Frames that are cut, lie about their lengths or are plain noise, all from `src` or
    `src_random` to `dst` (a unicast MAC nobody has). `victim_mac` is a real device's MAC that
    a misreading parser would find inside one of them; lan_v4/lan_v6 are real LAN addresses."""
    rnd = random.Random(seed)
    noise = lambda n: bytes(rnd.getrandbits(8) for _ in range(n))  # noqa: E731
    v4, v6 = lan_v4, lan_v6
    real_udp = udp(5353, 9, b"x" * 12)
    frames = [
        eth(dst, src, 0x0800, b""),  # Ethernet header only: no IPv4 header at all
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, real_udp)[:10]),  # IPv4 header cut
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, real_udp, ihl=3)),  # IHL below 5
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, b"", ihl=15)),  # IHL past the frame's end
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, real_udp, tot_len=12)),  # total length < IHL
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, real_udp, version=6)),  # IPv6 in an IPv4 frame
        # total length far beyond the frame: DNS and TCP/80 snippets that claim 64 KiB
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, udp(40000, 53, b"\x12\x34\x01\x00\x00\x01" + noise(20),
                                                   length=65000), tot_len=65535)),
        eth(dst, src, 0x0800, ipv4(v4, v4, 6, tcp(40000, 80, b"GET /" + noise(8)), tot_len=65535)),
        eth(dst, src, 0x0800, ipv4(v4, v4, 6, tcp(40001, 80, b"", doff=15))),  # data offset past the end
        eth(dst, src, 0x0800, ipv4(v4, v4, 6, tcp(40002, 80, b"x", doff=2))),  # data offset below 5
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, udp(40003, 53, b"", length=3))),  # UDP length < 8
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, real_udp, frag=0x0010)),  # a later fragment
        # well-formed headers, garbage application payloads
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, udp(40004, 53, noise(64)))),
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, udp(40005, 53, b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                                                          + b"\xc0\x0c" + b"\x00\x01\x00\x01"))),  # name loop
        eth(dst, src, 0x0800, ipv4(v4, v4, 17, udp(68, 67, noise(300)))),  # DHCP port, noise
        eth(dst, src, 0x0800, ipv4(v4, v4, 6, tcp(40006, 80, noise(200)))),
        eth(dst, src, 0x0800, ipv4(v4, v4, 6, tcp(40007, 80, b"GET \x00\xff\x01 HTTP/1.1\r\nHost: \x00\r\n\r\n"))),
        eth(dst, src, 0x0800, ipv4(v4, v4, 6, tcp(40008, 443, b"\x16\x03\x01\xff\xff\x01" + noise(200)))),
        eth(dst, src, 0x0800, ipv4(v4, v4, 6, tcp(40009, 443, b"\x16\x03\x01\x00\x40\x01\x00\x00\x3c"
                                                        + noise(40)))),  # ClientHello cut short
        # IPv6
        eth(dst, src, 0x86DD, ipv6(v6, v6, 17, real_udp)[:20]),  # header cut
        eth(dst, src, 0x86DD, ipv6(v6, v6, 17, udp(40010, 53, noise(30)), payload_len=65535)),
        eth(dst, src, 0x86DD, ipv6(v6, v6, 17, real_udp, payload_len=3)),  # shorter than UDP
        # hop-by-hop options chained to themselves more times than any parser should follow
        eth(dst, src, 0x86DD, ipv6(v6, v6, 0, b"".join(bytes([0, 0]) + b"\x01\x04\0\0\0\0" for _ in range(8))
                                   + udp(40011, 53, noise(20)))),
        eth(dst, src, 0x86DD, ipv6(v6, v6, 0, bytes([60, 255]) + noise(6))),  # extension longer than the packet
        eth(dst, src, 0x86DD, ipv6(v6, v6, 44, bytes([17, 0]) + struct.pack("!HI", 0x0100, 7)
                                   + udp(53, 53, noise(20)))),  # a later fragment
        eth(dst, src, 0x86DD, b"\x45" + noise(60)),  # IPv4 in an IPv6 frame
        # VLANs: two tags (parsed), three tags (one too many), a cut tag
        eth(dst, src, 0x88A8, vlan(10, 0x8100, vlan(20, 0x0800, ipv4(v4, v4, 17, udp(40012, 53, noise(16)))))),
        eth(dst, src, 0x8100, vlan(10, 0x8100, vlan(20, 0x8100, vlan(30, 0x0800,
                                                                   ipv4(v4, v4, 6, tcp(40013, 80, noise(32))))))),
        eth(dst, src, 0x8100, b"\x00"),
        # ARP: cut, and with lengths that put a real device's MAC where a 6/4 ARP has its sender
        eth(dst, src, 0x0806, arp(1, mac_bytes(src), socket.inet_aton(v4), b"\0" * 6, b"\0\0\0\0")[:12]),
        eth(dst, src, 0x0806, struct.pack("!HHBBH", 1, 0x0800, 2, 4, 1)
            + mac_bytes(victim_mac) + socket.inet_aton("10.77.0.199") + noise(10)),
    ]
    # noise after the MACs: random EtherTypes, random lengths
    for _ in range(40):
        frames.append(eth(dst, src_random, rnd.getrandbits(16), noise(rnd.randrange(0, 200))))
    for ethertype in (0x0800, 0x86DD, 0x0806, 0x8100):
        for _ in range(10):
            frames.append(eth(dst, src_random, ethertype, noise(rnd.randrange(0, 120))))
    return frames
