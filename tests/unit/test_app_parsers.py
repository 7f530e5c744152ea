"""Application-layer parsers (netwatchd.devices.app_parsers) on real and hostile bytes.

1. Real packets with the expected parse beside them: fixtures/app/NAME.hex + NAME.json, made by
   dig, curl, openssl s_client and busybox udhcpc (fixtures/app/capture_fixtures.py). The
   expected values come from the client's command line or its own decoding, not from us.
2. Hostile and edge-case inputs written out here, each with why it matters.
3. Hypothesis properties: no input raises or yields an unsafe string; every truncation of every
   fixture is safe; messages built from random fields parse back to those fields.
"""
import dataclasses
import ipaddress
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netwatchd.devices import dns as dns_parser
from netwatchd.devices.app_parsers import (
    DHCP_MESSAGE_TYPES,
    TRUNCATION_MARK,
    DhcpInfo,
    DnsAnswer,
    DnsMessage,
    DnsQuestion,
    HttpRequest,
    parse_dhcp,
    parse_dns,
    parse_http_request,
    parse_tls_sni,
)
from tests.unit.fixtures.app.wire import (
    QUESTION_A,
    BudgetedBytes,
    bootp,
    build_dns,
    client_hello,
    dns_header,
    dns_record,
    pointer_chain_records,
    sni_extension,
    tls_extension,
    work_budget,
)

FIXTURES = Path(__file__).parent / "fixtures" / "app"
PARSERS = {"dns": parse_dns, "http": parse_http_request, "tls": parse_tls_sni, "dhcp": parse_dhcp}
RESULT_TYPES = {"dns": DnsMessage, "http": HttpRequest, "tls": str, "dhcp": DhcpInfo}
# Modest and deadline-free: the machine is shared, and the file must stay well under 20 s.
QUICK = settings(max_examples=300, deadline=None, database=None)


def load_fixtures():
    cases = []
    for meta_path in sorted(FIXTURES.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        payload = bytes.fromhex(meta_path.with_suffix(".hex").read_text().replace("\n", ""))
        cases.append(pytest.param(meta["parser"], payload, meta["expected"], id=meta_path.stem))
    return cases


FIXTURE_CASES = load_fixtures()
FIXTURE_PAYLOADS = [(case.values[0], case.values[1]) for case in FIXTURE_CASES]


def as_plain(result):
    """A parse in the JSON fixtures' terms (tuples as lists; TLS gives a bare name)."""
    if dataclasses.is_dataclass(result):
        return json.loads(json.dumps(dataclasses.asdict(result)))
    return {"server_name": result}


def assert_safe(kind, result):
    """None or the parser's own type, and every string in it printable: nothing a terminal, a log
    line or D-Bus should not carry (C0/C1 controls, DEL, bidi and other format characters)."""
    if result is None:
        return
    assert isinstance(result, RESULT_TYPES[kind])
    strings = [result] if isinstance(result, str) else []
    if isinstance(result, DnsMessage):
        strings = [x.name for x in result.questions] + [a.name for a in result.answers]
        strings += [a.value for a in result.answers] + [x.qtype for x in result.questions]
        assert 0 <= result.id < 65536 and 0 <= result.rcode < 16 and result.questions
        assert all(q.name for q in result.questions)
        assert all(0 <= a.ttl < 2**31 for a in result.answers)
    elif dataclasses.is_dataclass(result):
        values = dataclasses.asdict(result).values()
        strings = [x for v in values for x in (v if isinstance(v, tuple) else (v,))]  # DHCP's dns: a tuple
    for text in strings:
        assert isinstance(text, str) and text.isprintable(), text


# ------------------------------------------------------------------------------ 1. real packets

@pytest.mark.parametrize("kind, payload, expected", FIXTURE_CASES)
def test_real_packet_parses_as_annotated(kind, payload, expected):
    assert as_plain(PARSERS[kind](payload)) == expected


def test_every_kind_has_fixtures():
    kinds = {kind for kind, _ in FIXTURE_PAYLOADS}
    assert kinds == set(PARSERS)


@pytest.mark.parametrize("kind, payload, expected", FIXTURE_CASES)
def test_every_truncation_of_a_real_packet_is_safe(kind, payload, expected):
    full = PARSERS[kind](payload)
    for cut in range(len(payload)):
        partial = PARSERS[kind](payload[:cut])
        assert_safe(kind, partial)
        if kind == "dns" and partial is not None:
            # A cut only ever loses answers from the end: never invents or reorders one.
            assert full.answers[: len(partial.answers)] == partial.answers
        if kind == "tls" and partial is not None:
            assert partial == full  # a fragment of a name is never reported as a name


@pytest.mark.parametrize("kind, payload, expected", [c for c in FIXTURE_CASES if c.values[0] != "dns"])
def test_the_parsers_do_not_claim_each_others_packets(kind, payload, expected):
    for other, parser in PARSERS.items():
        if other != kind and other != "dns":  # any 12+ bytes could be some DNS message
            assert parser(payload) is None, other


# ------------------------------------------------------------------------------ 2. hostile and edge cases: DNS

@pytest.mark.parametrize("name_wire, why", [
    (b"\xc0\x0c", "pointer to itself"),
    (b"\x01a\xc0\x0c", "pointer back to the start of its own name: a loop"),
    (b"\x03\x01b\x00\xc0\x0d", "pointer into its own name's label bytes (no loop, still refused)"),
    (b"\xc0\x20" + b"\x00" * 30, "pointer forwards"),
    (b"\x05ab", "label runs past the end"),
    (b"\x40abc\x00", "0x40 label type"),
    (b"\x80abc\x00", "0x80 label type"),
    ((b"\x3f" + b"x" * 63) * 4 + b"\x00", "name longer than 255 octets"),
    (b"\x00", "the root name is no question"),
    (b"\x01a", "no terminating root label"),
])
def test_dns_malformed_question_names_give_none(name_wire, why):
    assert parse_dns(dns_header() + name_wire + b"\x00\x01\x00\x01") is None, why


def test_dns_pointer_loops_are_refused_by_the_backwards_rule_alone(monkeypatch):
    # The jump and length caps are further lines: with both lifted, a loop must still end at once.
    monkeypatch.setattr(dns_parser, "MAX_POINTER_JUMPS", 10**9)
    monkeypatch.setattr(dns_parser, "MAX_NAME_OCTETS", 10**9)
    loop_in_question = dns_header() + b"\x01a\xc0\x0c\x00\x01\x00\x01"
    loop_in_cname = dns_header(an=1) + QUESTION_A + dns_record(5, b"\x01b\xc0\x1f")  # rdata at 0x1f
    assert parse_dns(BudgetedBytes(loop_in_question, 1000)) is None
    assert parse_dns(BudgetedBytes(loop_in_cname, 1000)).answers == (DnsAnswer("a", "CNAME", "", 60),)


def test_dns_huge_counts_in_a_short_message_make_no_work():
    assert parse_dns(dns_header(qd=65535, an=65535)) is None
    result = parse_dns(dns_header(qd=1, an=65535) + QUESTION_A + b"\x00" * 10)
    assert result.questions == (DnsQuestion("a", "A"),) and result.answers == ()


def test_dns_pointer_chain_longer_than_any_real_name_is_refused():
    # A TXT record whose rdata is 480 pointers, each to the one before, then a record named by
    # the last pointer: following it would take 480 jumps; a real name needs at most 127.
    region_at = 12 + len(QUESTION_A) + 11
    chain = b"\xc0\x0c" + b"".join(struct.pack("!H", 0xC000 | (region_at + 2 * i)) for i in range(479))
    last = struct.pack("!H", 0xC000 | (region_at + 2 * 479))
    a_record = dns_record(1, b"\x01\x02\x03\x04", owner=last)
    msg = dns_header(an=2) + QUESTION_A + dns_record(16, chain, owner=b"\x00") + a_record
    assert parse_dns(msg).answers == (DnsAnswer("", "TXT", "", 60),)


def test_dns_names_are_lowercased_and_control_bytes_escaped():
    msg = dns_header() + b"\x0bEv\x00il\x1b[31m\x07\x03CoM\x00\x00\xff\x00\x01"
    assert parse_dns(msg).questions == (DnsQuestion(r"ev\x00il\x1b[31m\x07.com", "ANY"),)


@pytest.mark.parametrize("label, expected, why", [
    (b"caf\xc3\xa9", "caf\u00e9", "UTF-8, as mDNS names are: kept"),
    (b"caf\xe9", r"caf\xe9", "a byte that is no UTF-8: escaped"),
    (b"a\xe2\x80\xaeexe.txt", r"a\u202eexe.txt", "right-to-left override: escaped"),
    (b"back\\slash", r"back\\slash", "a backslash: doubled, so no escape can be forged"),
])
def test_dns_label_bytes_beyond_ascii(label, expected, why):
    msg = dns_header() + bytes([len(label)]) + label + b"\x00\x00\x01\x00\x01"
    assert parse_dns(msg).questions[0].name == expected, why


def test_dns_root_questions_are_left_out_and_others_kept():
    msg = dns_header(qd=2) + b"\x00\x00\x02\x00\x01" + QUESTION_A
    assert parse_dns(msg).questions == (DnsQuestion("a", "A"),)


def test_dns_question_section_cut_keeps_questions_and_no_answers():
    msg = dns_header(qd=2, an=1) + QUESTION_A + b"\x01b"
    result = parse_dns(msg)
    assert result.questions == (DnsQuestion("a", "A"),) and result.answers == ()


@pytest.mark.parametrize("record, expected, why", [
    (dns_record(1, b"\x01\x02\x03"), DnsAnswer("a", "A", "", 60), "A with 3 bytes of address"),
    (dns_record(28, b"\x00" * 15), DnsAnswer("a", "AAAA", "", 60), "AAAA with 15 bytes"),
    (dns_record(5, b"\x03www"), DnsAnswer("a", "CNAME", "", 60), "CNAME target runs off the message"),
    (dns_record(5, b"\x03www\xc0\x0c"), DnsAnswer("a", "CNAME", "www.a", 60), "compressed CNAME target"),
    (dns_record(12, b"\xc0\x0c"), DnsAnswer("a", "PTR", "a", 60), "PTR to an earlier name"),
    (dns_record(2, b"\xc0\x30"), DnsAnswer("a", "NS", "", 60), "NS pointing forwards"),
    (dns_record(999, b"xyz"), DnsAnswer("a", "TYPE999", "", 60), "unknown type"),
    (dns_record(1, b"\x01\x02\x03\x04", ttl=2**31), DnsAnswer("a", "A", "1.2.3.4", 0), "TTL top bit"),
    (dns_record(1, b"\x01\x02\x03\x04", owner=b"\x00"), DnsAnswer("", "A", "1.2.3.4", 60), "root owner"),
])
def test_dns_answer_values(record, expected, why):
    assert parse_dns(dns_header(an=1) + QUESTION_A + record).answers == (expected,), why


def test_dns_name_value_must_end_inside_its_rdata():
    # 'www' would end on the next record's root owner: a name read across records is no name.
    msg = dns_header(an=2) + QUESTION_A + dns_record(5, b"\x03www") + dns_record(1, b"\x01\x02\x03\x04", owner=b"\x00")
    assert parse_dns(msg).answers == (DnsAnswer("a", "CNAME", "", 60), DnsAnswer("", "A", "1.2.3.4", 60))


def test_dns_record_cut_inside_its_rdata_is_dropped():
    msg = dns_header(an=2) + QUESTION_A + dns_record(1, b"\x01\x02\x03\x04") + dns_record(28, b"\x00" * 16)[:-1]
    assert parse_dns(msg).answers == (DnsAnswer("a", "A", "1.2.3.4", 60),)


# ------------------------------------------------------------------------------ 2. HTTP

@pytest.mark.parametrize("payload, expected, why", [
    (b"GET /a HTTP/1.1\r\nUser-Agent: x\r\nHo", ("GET", "", "/a"), "cut before the Host line"),
    (b"GET /a HTTP/1.1\r\nHost: examp", ("GET", "", "/a"), "cut inside the Host line: not a name"),
    (b"GET /a HTTP/1.1\r\n\r\nHost: body.example", ("GET", "", "/a"), "'Host' in the body"),
    (b"GET /a HTTP/1.1\r\nhOsT:  Ex.Test \r\n\r\n", ("GET", "ex.test", "/a"), "header name case, spaces"),
    (b"GET /a HTTP/1.1\nHost: lf.example\n\n", ("GET", "lf.example", "/a"), "bare LF line ends"),
    (b"GET /a HTTP/1.1\r\nHost: a\x1b[2Jb\x00\r\n", ("GET", r"a\x1b[2jb\x00", "/a"), "control bytes in Host"),
    (b"GET /a HTTP/1.1\r\nHost: \xe2\x80\xaeh\xff\r\n", ("GET", r"\u202eh\xff", "/a"), "bidi, bad UTF-8 in Host"),
    (b"GET /a\\x1b HTTP/1.1\r\n", ("GET", "", r"/a\\x1b"), "a backslash in the path: doubled"),
    (b"GET /a HTTP/1.1\r\nHost: [::1]:8080\r\n", ("GET", "[::1]:8080", "/a"), "IPv6 literal, port"),
    (b"GET /a HTTP/1.1\r\nHost: [::1]:80\r\n", ("GET", "[::1]", "/a"), "IPv6 literal, default port"),
    (b"GET /a HTTP/1.1\r\nHost: h.example:\r\n", ("GET", "h.example", "/a"), "empty port"),
    (b"GET https://u:pw@Secure.Example:443/x HTTP/1.1\r\n\r\n", ("GET", "secure.example", "/x"),
     "absolute-form https: userinfo dropped, default port 443"),
    (b"GET http://uri.example/x HTTP/1.1\r\nHost: header.example\r\n", ("GET", "uri.example", "/x"),
     "absolute-form: the URI's host wins over the Host header (RFC 9112 3.2.2)"),
    (b"GET http://h.example HTTP/1.1\r\n", ("GET", "h.example", "/"), "absolute-form, no path"),
    (b"GET http://h.example?q=1 HTTP/1.1\r\n", ("GET", "h.example", "/?q=1"), "absolute-form, query"),
    (b"GET http:///x HTTP/1.1\r\nHost: fallback.example\r\n", ("GET", "fallback.example", "/x"),
     "absolute-form with an empty authority"),
    (b"CONNECT Tunnel.Example:443 HTTP/1.1\r\nHost: x\r\n", ("CONNECT", "tunnel.example:443", ""), "CONNECT"),
    (b"OPTIONS * HTTP/1.1\r\nHost: o.example\r\n", ("OPTIONS", "o.example", "*"), "asterisk-form"),
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\n", ("GET", "", "/caf%C3%A9"), "raw UTF-8 path percent-encoded"),
    (b"GET /x HT", ("GET", "", "/x"), "cut inside the version: the target is whole"),
    (b"DELETE /item/1 HTTP/1.0\r\n", ("DELETE", "", "/item/1"), "HTTP/1.0"),
])
def test_http_requests(payload, expected, why):
    assert parse_http_request(payload) == HttpRequest(*expected), why


@pytest.mark.parametrize("payload, why", [
    (b"get / HTTP/1.1\r\n", "methods are case-sensitive"),
    (b"BREW /pot HTTP/1.1\r\n", "not a method we know"),
    (b"GET / HTTP/2.0\r\n", "not HTTP/1.x"),
    (b"GET /  HTTP/1.1\r\n", "two spaces"),
    (b"GET /a\x01b HTTP/1.1\r\n", "control byte in the target"),
    (b"GET", "nothing but a method"),
    (b"GET ", "empty target"),
    (b"GET relative HTTP/1.1\r\n", "target of no known form"),
    (b"GET http://cut.exam", "cut inside an absolute-form authority"),
    (b"CONNECT cut.exam", "cut inside a CONNECT authority"),
    (b"HTTP/1.1 200 OK\r\n", "a response"),
    (b"\x16\x03\x01\x00\x05GET / HTTP/1.1", "TLS"),
    (b"", "nothing"),
])
def test_http_non_requests_give_none(payload, why):
    assert parse_http_request(payload) is None, why


def test_http_path_cap_counts_the_mark():
    exact = b"/" + b"p" * 9
    assert parse_http_request(b"GET " + exact + b" HTTP/1.1\r\n", max_path=10).path == exact.decode()
    longer = parse_http_request(b"GET " + exact + b"q HTTP/1.1\r\n", max_path=10).path
    assert longer == "/ppppppppp"[:9] + TRUNCATION_MARK and len(longer) == 10
    assert parse_http_request(b"GET /abc", max_path=10).path == "/abc" + TRUNCATION_MARK
    assert parse_http_request(b"GET /abc HTTP/1.1\r\n", max_path=0).path == TRUNCATION_MARK


# ------------------------------------------------------------------------------ 2. TLS

@pytest.mark.parametrize("payload, expected, why", [
    (client_hello(sni_extension((0, b"Plain.Example"))), "plain.example", "lowercased"),
    (client_hello(sni_extension((0, b"dot.example."))), "dot.example", "trailing dot"),
    (client_hello(sni_extension((7, b"other"), (0, b"second.example"))), "second.example",
     "an entry of another name type comes first"),
    (client_hello(sni_extension((0, b"a\x00b\x1b.example"))), r"a\x00b\x1b.example", "control bytes"),
    (client_hello(sni_extension((0, b"")), session_id=b"s" * 32), None, "empty name"),
    (client_hello(sni_extension((1, b"no.host.name"))), None, "no host_name entry"),
    (client_hello(tls_extension(10, b"\x00\x02\x00\x1d")), None, "no SNI extension"),
    (client_hello(b""), None, "empty extension block"),
    (client_hello(sni_extension((0, b"late.example")), record_len=60), None,
     "the record ends before the SNI: the rest is in a record we do not read"),
    (client_hello(sni_extension((0, b"x.example")))[:5] + b"\x02" + client_hello(b"")[6:], None,
     "a ServerHello"),
    (b"\x17" + client_hello(sni_extension((0, b"x.example")))[1:], None, "application data"),
    (b"\x16\x02" + client_hello(sni_extension((0, b"x.example")))[2:], None, "not version 3.x"),
    (client_hello(sni_extension((0, b"x.example")), ciphers=b"\x00" * 600)[:300], None,
     "cut inside the cipher suites"),
])
def test_tls_client_hellos(payload, expected, why):
    assert parse_tls_sni(payload) == expected, why


# ------------------------------------------------------------------------------ 2. DHCP

@pytest.mark.parametrize("payload, field, expected, why", [
    (bootp(b"\x35\x01\x08\xff"), "message_type", "INFORM", "type 8"),
    (bootp(b"\x35\x01\x2a\xff"), "message_type", "TYPE42", "unknown type"),
    (bootp(b"\x0c\x03abc\xff"), "message_type", "", "plain BOOTP with options, no type"),
    (bootp(b"\x0c\x05host\x00\xff"), "hostname", "host", "NUL-terminated hostname"),
    (bootp(b"\x0c\x12\x1b]52;c;ZXZpbA==\x07PC\xff"), "hostname", r"\x1b]52;c;ZXZpbA==\x07PC",
     "OSC 52 (write the clipboard) in the hostname"),
    (bootp(b"\x3c\x0aMSFT\xc2\x9b5.0\x00\xff"), "vendor_class", r"MSFT\u009b5.0", "C1 CSI in the vendor class"),
    (bootp(b"\x0c\x05PC\\x1\xff"), "hostname", r"PC\\x1", "a backslash: doubled, so no escape can be forged"),
    (bootp(b"\x0c\x03Joe\x00\x00\x0c\x03-PC\xff"), "hostname", "Joe-PC", "split option, pads between"),
    (bootp(b"\x0c\x03abc\x3c\x09cut-short"), "hostname", "abc", "cut inside the next option"),
    (bootp(b"\x0c\x03abc\xff\x0c\x03xyz"), "hostname", "abc", "nothing after END counts"),
    (bootp(b"\x32\x03\x0a\x00\x00\xff"), "requested_ip", "", "requested IP of 3 bytes"),
    (bootp(b"\x32\x04\x0a\x00\x00\x07\xff"), "requested_ip", "10.0.0.7", "requested IP"),
    (bootp(b"\xff", htype=32, hlen=0), "client_mac", "", "not Ethernet (InfiniBand)"),
    (bootp(b"\xff", ciaddr=b"\xc0\xa8\x01\x02"), "client_ip", "192.168.1.2", "ciaddr"),
    (bootp(b"\xff"), "your_ip", "", "yiaddr 0.0.0.0 is not an address"),
    (bootp(b"\x35\x01\x01\xff"), "op", "request", "a client's DISCOVER: BOOTREQUEST"),
])
def test_dhcp_fields(payload, field, expected, why):
    assert getattr(parse_dhcp(payload), field) == expected, why


@pytest.mark.parametrize("payload, why", [
    (bootp(b"\xff", cookie=b"\x63\x82\x53\x64"), "no magic cookie"),
    (bootp(b"\xff", op=3), "op is neither request nor reply"),
    (bootp(b"")[:239], "shorter than the fixed header and cookie"),
])
def test_dhcp_non_messages_give_none(payload, why):
    assert parse_dhcp(payload) is None, why


# ------------------------------------------------------------------------------ 2. work stays linear

@pytest.mark.parametrize("parser, payload", [
    (parse_dns, pointer_chain_records(1, 60)),
    (parse_dns, pointer_chain_records(5, 53)),
    (parse_dns, (dns_header(an=65535) + QUESTION_A + dns_record(5, b"\xc0\x0c") * 80)[:1024]),
    (parse_http_request, b"GET /" + b"a" * 1019),
    (parse_http_request, b"GET / HTTP/1.1\r\n" + b"X:\r\n" * 252),
    (parse_tls_sni, client_hello(tls_extension(1, b"") * 250)[:1024]),
    (parse_dhcp, bootp(b"\x00" * 784)),
], ids=["dns-deep-owners", "dns-deep-cnames", "dns-many-records", "http-long-target", "http-many-headers",
        "tls-many-extensions", "dhcp-all-pads"])
def test_worst_case_inputs_take_linear_work(parser, payload):
    assert len(payload) <= 1024
    result = parser(BudgetedBytes(payload, work_budget(payload)))  # raises WorkBudgetSpent if not
    if parser is parse_dns:
        assert len(result.answers) > 50  # all of it was really parsed, not refused early


# ------------------------------------------------------------------------------ 3. properties: any bytes

@QUICK
@given(st.binary(max_size=1100), st.sampled_from(sorted(PARSERS)))
def test_any_bytes_parse_safely(payload, kind):
    assert_safe(kind, PARSERS[kind](BudgetedBytes(payload, work_budget(payload))))


@QUICK
@given(st.sampled_from(FIXTURE_PAYLOADS), st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 255)),
                                                    max_size=8), st.integers(0, 1024))
def test_mutated_real_packets_parse_safely(fixture, flips, cut):
    # Random bytes rarely get past the first checks; real packets with a few bytes changed do.
    kind, payload = fixture
    mutated = bytearray(payload)
    for index, value in flips:
        if mutated:
            mutated[index % len(mutated)] = value
    payload = bytes(mutated[:cut])
    assert_safe(kind, PARSERS[kind](BudgetedBytes(payload, work_budget(payload))))


# ------------------------------------------------------------------------------ 3. properties: round trips

LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=63)
HOSTNAME = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20),
                    min_size=1, max_size=5).map(".".join)
DNS_NAME = st.lists(LABEL, min_size=1, max_size=6).filter(
    lambda labels: sum(len(label) + 1 for label in labels) < 255).map(".".join)
IPV4 = st.binary(min_size=4, max_size=4).filter(lambda raw: raw != b"\0\0\0\0")


def dns_answers():
    def with_value(rtype):
        if rtype == "A":
            return IPV4.map(lambda raw: str(ipaddress.IPv4Address(raw)))
        if rtype == "AAAA":
            return st.binary(min_size=16, max_size=16).map(lambda raw: str(ipaddress.IPv6Address(raw)))
        if rtype in ("CNAME", "PTR", "NS"):
            return DNS_NAME
        return st.just("")

    rtypes = st.sampled_from(["A", "AAAA", "CNAME", "PTR", "NS", "TXT", "MX", "HTTPS", "TYPE4242"])
    return rtypes.flatmap(lambda rtype: st.builds(
        DnsAnswer, name=DNS_NAME | st.just(""), rtype=st.just(rtype), value=with_value(rtype),
        ttl=st.integers(0, 2**31 - 1)))


DNS_MESSAGES = st.builds(
    DnsMessage, id=st.integers(0, 65535), is_response=st.booleans(), rcode=st.integers(0, 15),
    questions=st.lists(st.builds(DnsQuestion, name=DNS_NAME,
                                 qtype=st.sampled_from(["A", "AAAA", "HTTPS", "PTR", "ANY", "TYPE4242"])),
                       min_size=1, max_size=3).map(tuple),
    answers=st.lists(dns_answers(), max_size=8).map(tuple))


@QUICK
@given(DNS_MESSAGES)
def test_dns_round_trip(msg):
    wire = build_dns(msg)
    assert parse_dns(wire) == msg
    if msg.answers:
        cut = parse_dns(wire[: len(wire) - 1])  # one byte short: only the last answer is lost
        assert cut.questions == msg.questions and cut.answers == msg.answers[:-1]


HTTP_PATH = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/?%",
                    max_size=300).map(lambda rest: "/" + rest)
HTTP_METHOD = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
PORT = st.integers(1, 65535).filter(lambda port: port != 80)


@QUICK
@given(HTTP_METHOD, HOSTNAME, st.none() | PORT, HTTP_PATH, st.integers(1, 300),
       st.sampled_from(["Host", "host", "HOST"]), st.sampled_from(["\r\n", "\n"]),
       st.lists(st.sampled_from(["User-Agent: t/1", "Accept: */*", "X-Hostname: no"]), max_size=3),
       st.booleans(), st.booleans())
def test_http_round_trip(method, name, port, path, max_path, header, eol, others, upper, cut_after_host):
    host = name if port is None else f"{name}:{port}"
    sent_host = (host.upper() if upper else host) + (":80" if port is None else "")  # 80: dropped
    lines = [f"{method} {path} HTTP/1.1", *others, f"{header}: {sent_host}", "Accept-Encoding: gzip"]
    request = eol.join(lines) + eol + ("" if cut_after_host else eol)
    expected_path = path if len(path) <= max_path else path[: max_path - 1] + TRUNCATION_MARK
    assert parse_http_request(request.encode(), max_path) == HttpRequest(method, host, expected_path)


SNI_HOST = st.lists(st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
                            min_size=1, max_size=63), min_size=1, max_size=4).map(".".join)
OTHER_EXTENSIONS = st.lists(st.tuples(st.integers(1, 65535), st.binary(max_size=40)), max_size=5).map(
    lambda exts: b"".join(tls_extension(t, data) for t, data in exts))


@QUICK
@given(SNI_HOST, OTHER_EXTENSIONS, OTHER_EXTENSIONS, st.binary(max_size=32),
       st.integers(1, 40).map(lambda n: b"\x13\x01" * n), st.integers(0, 4))
def test_tls_round_trip_and_cuts(name, before, after, session_id, ciphers, record_minor):
    sni = sni_extension((0, name.encode()))
    hello = client_hello(before + sni + after, session_id, ciphers, record_minor)
    assert parse_tls_sni(hello) == name.lower()
    sni_end = 5 + 4 + 2 + 32 + 1 + len(session_id) + 2 + len(ciphers) + 2 + 2 + len(before) + len(sni)
    for cut in (sni_end - 1, sni_end - len(name), sni_end - len(sni), 9):
        assert parse_tls_sni(hello[:cut]) is None  # cut before the name is whole
    assert parse_tls_sni(hello[:sni_end]) == name.lower()


# printable ASCII but the backslash, which comes back doubled (test_dhcp_fields)
PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e, blacklist_characters="\\"), max_size=60)


@QUICK
@given(st.sampled_from(sorted(DHCP_MESSAGE_TYPES)),
       st.binary(min_size=6, max_size=6), PRINTABLE, st.just("") | IPV4, st.just("") | IPV4,
       st.just("") | IPV4, PRINTABLE, st.permutations(range(4)), st.integers(0, 3), st.integers(1, 59))
def test_dhcp_round_trip(kind, mac, hostname, requested, ciaddr, yiaddr, vendor, order, pads, split_at):
    options = [bytes([53, 1, kind]),
               bytes([50, 4]) + requested if requested else b"",
               bytes([60, len(vendor)]) + vendor.encode() if vendor else b"",
               # RFC 3396: a long option may come in pieces, joined in order
               b"".join(bytes([12, len(part)]) + part.encode()
                        for part in (hostname[:split_at], hostname[split_at:]) if part)]
    body = b"".join(b"\x00" * pads + options[i] for i in order) + b"\xff"
    payload = bootp(body, op=2 if kind in (2, 5, 6) else 1,  # OFFER, ACK, NAK come from servers
                    mac=mac, ciaddr=ciaddr or b"\0" * 4, yiaddr=yiaddr or b"\0" * 4)

    def dotted(raw):
        return str(ipaddress.IPv4Address(raw)) if raw else ""

    expected = DhcpInfo(DHCP_MESSAGE_TYPES[kind], ":".join(f"{b:02x}" for b in mac), hostname, dotted(requested),
                        dotted(ciaddr), dotted(yiaddr), vendor, op="reply" if kind in (2, 5, 6) else "request")
    assert parse_dhcp(payload) == expected
