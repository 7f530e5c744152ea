"""DNS messages (RFC 1035) from the bounded snippets the TC classifier sends up (pure).

What a device asked for (questions) and what it was told (answers), so that addresses can be
shown with the names they were looked up by. The input is untrusted and may be cut anywhere:
every length and count is checked against the bytes actually present, compression pointers
must point strictly backwards, and nothing here raises. Work is linear in the input size: every
loop either consumes input or is capped by a constant.

Authority and additional sections are not read: they say nothing about the device.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import List, Optional, Tuple

from netwatchd.text import printable

HEADER_SIZE = 12
MAX_NAME_OCTETS = 255  # RFC 1035 3.1: a name's wire form, length octets included
# A name has at most 127 labels, and a compressor emits at most one pointer per label run,
# so a longer chain is an attack; the cap keeps a hostile name's cost constant.
MAX_POINTER_JUMPS = 127
MAX_SIGNED_TTL = 2**31 - 1  # RFC 2181 8: a TTL with the top bit set means zero

TYPE_NAMES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF",
    251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA",
}
NAME_VALUED_TYPES = frozenset({2, 5, 12})  # NS, CNAME, PTR: the value is a (compressible) name

def type_name(rtype: int) -> str:
    return TYPE_NAMES.get(rtype, f"TYPE{rtype}")  # RFC 3597's spelling of unknown types


@dataclass(frozen=True)
class DnsQuestion:
    name: str
    qtype: str


@dataclass(frozen=True)
class DnsAnswer:
    name: str
    rtype: str
    value: str  # address for A/AAAA, name for CNAME/PTR/NS, '' for the rest
    ttl: int


@dataclass(frozen=True)
class DnsMessage:
    id: int
    is_response: bool
    rcode: int
    questions: Tuple[DnsQuestion, ...]
    answers: Tuple[DnsAnswer, ...]


def _u16(buf: bytes, pos: int) -> int:
    return (buf[pos] << 8) | buf[pos + 1]


def read_name(msg: bytes, pos: int) -> Optional[Tuple[str, int]]:
    """The name at `pos` (ASCII lowercased, no trailing dot, '' for the root; UTF-8 as mDNS sends
    it, anything else escaped by netwatchd.text.printable) and the offset just past it in the
    message; None if it is malformed or runs past the end.

    A pointer must point before the start of the label run it ends: jump targets then strictly
    decrease, so no pointer loop can exist, and real compressors only point at earlier data.
    """
    labels: List[bytes] = []
    octets = 1  # the root label's length octet
    run_start = pos
    end = -1  # where the name ends in the message: after its first pointer, or its root label
    jumps = 0
    size = len(msg)
    while pos < size:
        length = msg[pos]
        if length == 0:
            if end < 0:
                end = pos + 1
            # lowercased as DNS compares (ASCII only), then escaped: a label is any bytes
            return printable(b".".join(labels).lower()), end
        if length >= 0xC0:
            if pos + 1 >= size or jumps >= MAX_POINTER_JUMPS:
                return None
            target = ((length & 0x3F) << 8) | msg[pos + 1]
            if target >= run_start:
                return None
            if end < 0:
                end = pos + 2
            jumps += 1
            pos = run_start = target
            continue
        if length > 63:  # 0x40 and 0x80 label types: extended (obsolete) or unassigned
            return None
        octets += 1 + length
        if octets > MAX_NAME_OCTETS or pos + 1 + length > size:
            return None
        labels.append(msg[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return None


def _read_question(msg: bytes, pos: int) -> Optional[Tuple[DnsQuestion, int]]:
    named = read_name(msg, pos)
    if named is None:
        return None
    name, pos = named
    if pos + 4 > len(msg):
        return None
    return DnsQuestion(name, type_name(_u16(msg, pos))), pos + 4  # class ignored (mDNS bits)


def _answer_value(msg: bytes, rtype: int, start: int, end: int) -> str:
    rdata = msg[start:end]
    if rtype == 1 and len(rdata) == 4:
        return "%d.%d.%d.%d" % tuple(rdata)
    if rtype == 28 and len(rdata) == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in NAME_VALUED_TYPES:
        named = read_name(msg, start)
        if named is not None and named[1] <= end:
            return named[0]
    return ""


def _read_answer(msg: bytes, pos: int) -> Optional[Tuple[DnsAnswer, int]]:
    """One complete resource record, or None if it is malformed or cut short."""
    named = read_name(msg, pos)
    if named is None:
        return None
    name, pos = named
    if pos + 10 > len(msg):
        return None
    rtype = _u16(msg, pos)
    ttl = int.from_bytes(msg[pos + 4 : pos + 8], "big")
    rdata_start = pos + 10
    rdata_end = rdata_start + _u16(msg, pos + 8)
    if rdata_end > len(msg):
        return None
    value = _answer_value(msg, rtype, rdata_start, rdata_end)
    ttl = ttl if ttl <= MAX_SIGNED_TTL else 0
    return DnsAnswer(name, type_name(rtype), value, ttl), rdata_end


def parse_dns(payload: bytes) -> Optional[DnsMessage]:
    """A DNS message over UDP; None unless at least one question with a non-empty name parses.

    Questions with the root name are left out. A message cut short keeps its questions and the
    answers that arrived complete. Loops are bounded by the input: each question takes at least
    5 bytes and each record at least 11, so the counts in the header cannot make work.
    """
    if len(payload) < HEADER_SIZE:
        return None
    flags = _u16(payload, 2)
    qdcount, ancount = _u16(payload, 4), _u16(payload, 6)
    pos = HEADER_SIZE
    questions: List[DnsQuestion] = []
    complete = True
    for _ in range(qdcount):
        parsed = _read_question(payload, pos)
        if parsed is None:
            complete = False  # the answers' position is unknown
            break
        question, pos = parsed
        if question.name:
            questions.append(question)
    if not questions:
        return None
    answers: List[DnsAnswer] = []
    if complete:
        for _ in range(ancount):
            parsed_answer = _read_answer(payload, pos)
            if parsed_answer is None:
                break
            answer, pos = parsed_answer
            answers.append(answer)
    return DnsMessage(
        id=_u16(payload, 0),
        is_response=bool(flags & 0x8000),
        rcode=flags & 0x000F,
        questions=tuple(questions),
        answers=tuple(answers),
    )
