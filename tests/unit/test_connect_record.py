"""Decoding of ring-buffer records, driven by the cases in fixtures/conn_events.json."""
import ctypes
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netwatchd.connects.records import (
    _EVENT,
    LONG_EVENT_SIZE,
    ConnEvent,
    MalformedEvent,
    ProcEntry,
    decode_event,
)

CASES = json.loads((Path(__file__).parent / "fixtures" / "conn_events.json").read_text())


def build_event(fields: dict) -> bytes:
    ev = ConnEvent()
    for name in ("boot_ns", "tgid", "tid", "uid", "ret", "family", "port", "kind", "transport", "outcome"):
        setattr(ev, name, fields[name])
    for name in ("syn_ns", "latency_usec", "end_err"):
        setattr(ev, name, fields.get(name, 0))
    ev.comm = fields["comm"].encode()
    if "addr_hex" in fields:
        raw = bytes.fromhex(fields["addr_hex"])
        ctypes.memmove(ctypes.addressof(ev) + ConnEvent.addr.offset, raw, len(raw))
    if "path" in fields or fields["family"] in (0, 1):  # records the socket hook did not see are long
        path = fields.get("path", "").encode()
        ev.path_len = fields.get("path_len", 0)
        return bytes(ev) + path.ljust(LONG_EVENT_SIZE - len(bytes(ev)), b"\0")
    return bytes(ev)


def test_layout_matches_bpf_header():
    # bpf/connect.h: struct nw_conn_event is 80 bytes (192 with a unix path), nw_proc_entry 72
    assert ctypes.sizeof(ConnEvent) == 80 and LONG_EVENT_SIZE == 192
    assert ConnEvent.comm.offset == 32 and ConnEvent.addr.offset == 48 and ConnEvent.syn_ns.offset == 64
    assert ctypes.sizeof(ProcEntry) == 72 and ProcEntry.counts.offset == 24


@pytest.mark.parametrize("case", CASES, ids=[c["about"] for c in CASES])
def test_decode(case):
    record = decode_event(build_event(case["event"]), boot_to_realtime_ns=1_000_000_000_000)
    for field, expected in case["expect"].items():
        assert getattr(record, field) == expected, field
    assert record.timestamp_usec == (case["event"]["boot_ns"] + 1_000_000_000_000) // 1000


def test_every_field_lands_in_its_own_place():
    """decode_event builds records positionally (for speed): distinct values in every field of
    the raw record come out under the right names, and the comm cache keeps commands apart."""
    ev = dict(boot_ns=5_000_000, tgid=101, tid=102, uid=103, ret=-115, family=2, port=8443, kind=1, transport=1,
              outcome=2, comm="first", addr_hex="0a000007", syn_ns=104, latency_usec=105, end_err=111)
    record = decode_event(build_event(ev), boot_to_realtime_ns=0)
    assert (record.timestamp_usec, record.pid, record.tid, record.uid, record.command, record.kind, record.family,
            record.transport, record.destination, record.port, record.return_code, record.outcome,
            record.latency_usec, record.end_errno, record.syn_boot_ns) == (
        5000, 101, 102, 103, "first", "connect", "inet", "tcp", "10.0.0.7", 8443, -115, "refused", 105, 111, 104)
    assert decode_event(build_event(dict(ev, comm="second")), 0).command == "second"
    assert decode_event(build_event(ev), 0).command == "first"


@pytest.mark.parametrize("comm, shown", [
    (b"\x1b[31mRED\x1b[0m", r"\x1b[31mRED\x1b[0m"),  # prctl(PR_SET_NAME) takes any bytes
    (b"\x1b]52;c;ZXZp\x07", r"\x1b]52;c;ZXZp\x07"),  # OSC 52: write the clipboard
    (b"\xe2\x80\xaeevil", r"\u202eevil"),  # right-to-left override
    (b"caf\xc3", r"caf\xc3"),  # 'café' cut inside its é (the kernel keeps 15 bytes)
    (b"a\\b", r"a\\b"),
    (b"caf\xc3\xa9", "caf\u00e9"),
])
def test_a_command_is_shown_escaped(comm, shown):
    raw = bytearray(build_event(dict(CASES[0]["event"], comm="")))
    raw[ConnEvent.comm.offset : ConnEvent.comm.offset + len(comm)] = comm
    assert decode_event(bytes(raw), 0).command == shown


@pytest.mark.parametrize("path, shown", [
    ("\0nw\x1b[2J\x1b[H", r"@nw\x1b[2J\x1b[H"),
    ("/tmp/\u202ekcos", r"/tmp/\u202ekcos"),
    ("/tmp/a\\x1b", r"/tmp/a\\x1b"),
])
def test_a_unix_path_is_shown_escaped(path, shown):
    ev = dict(CASES[6]["event"], path=path, path_len=len(path.encode()))
    assert decode_event(build_event(ev), 0).destination == shown


def test_short_record_is_a_named_error():
    with pytest.raises(MalformedEvent, match="record of 10 bytes, expected 80 or 192"):
        decode_event(b"\0" * 10, 0)


def test_unknown_family_and_kind_are_shown_not_fatal():
    ev = json.loads(json.dumps(CASES[0]["event"]))
    ev.update(family=17, kind=9, transport=200)
    record = decode_event(build_event(ev), 0)
    assert (record.family, record.kind, record.transport, record.destination) == ("af17", "kind9", "unknown", "")


def test_unknown_outcome_is_a_named_error():
    ev = json.loads(json.dumps(CASES[0]["event"]))
    ev.update(outcome=0)
    with pytest.raises(MalformedEvent, match=r"record with outcome 0, expected one of \[1, 2, 3, 4, 5, 6, 7\]"):
        decode_event(build_event(ev), 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=80, max_size=80))
def test_the_fast_unpacking_reads_the_fields_the_ctypes_mirror_reads(raw):
    """decode_event unpacks with a struct format for speed; ConnEvent is the mirror the header
    test checks. Any 80 bytes must read the same through both."""
    ev = ConnEvent.from_buffer_copy(raw)
    fields = _EVENT.unpack_from(raw)
    names = [name for name, _ in ConnEvent._fields_]
    for name, value in zip(names, fields):
        expected = getattr(ev, name)
        if name == "comm":
            assert value.split(b"\0", 1)[0] == expected  # ctypes shows a char array up to its NUL
        elif name == "addr":
            assert value == bytes(expected)
        else:
            assert value == expected, name
    assert len(fields) == len(names)

