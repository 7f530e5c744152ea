"""netwatchd.text: untrusted bytes and strings as printable text, and back.

The expected strings are written out here: what a terminal must never receive (ESC sequences,
OSC 52, bidi overrides, C1 controls, invalid UTF-8) and what it should show instead.
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netwatchd.text import printable, unescape

QUICK = settings(max_examples=500, deadline=None, database=None)


@pytest.mark.parametrize("raw, shown, why", [
    (b"curl", "curl", "plain ASCII: unchanged"),
    (b"\x1b[31mRED\x1b[0m", r"\x1b[31mRED\x1b[0m", "SGR colour sequences"),
    (b"\x1b]52;c;ZXZpbA==\x07", r"\x1b]52;c;ZXZpbA==\x07", "OSC 52: write the clipboard"),
    (b"\x1b[2J\x1b[H", r"\x1b[2J\x1b[H", "clear the screen, cursor home"),
    (b"a\tb\nc\rd\x00e\x7f", r"a\x09b\x0ac\x0dd\x00e\x7f", "C0 controls and DEL"),
    ("\u202egnp.exe".encode(), r"\u202egnp.exe", "right-to-left override (bidi)"),
    ("a\u2066b\u200bc\u00adz".encode(), r"a\u2066b\u200bc\u00adz", "bidi isolate, zero-width space, soft hyphen"),
    ("x\u009b31m".encode(), r"x\u009b31m", "C1 CSI, valid UTF-8: a character, so \\u"),
    (b"x\x9b31m", r"x\x9b31m", "the byte 0x9b alone, invalid UTF-8: a byte, so \\x"),
    (b"caf\xe9 \xff\xfe", r"caf\xe9 \xff\xfe", "invalid UTF-8 bytes"),
    (b"\xed\xa0\x80", r"\xed\xa0\x80", "an encoded surrogate is no UTF-8"),
    (b"\xc3", r"\xc3", "UTF-8 cut in the middle of a character (the kernel's 15-byte comm)"),
    (b"\\", "\\\\", "a lone backslash: doubled"),
    (b"\\x1b", r"\\x1b", "text that looks like an escape cannot pass for one"),
    ("café ☕ 日本 𝄞".encode(), "café ☕ 日本 𝄞", "printable Unicode: unchanged"),
    ("\u00a0\u2028".encode(), r"\u00a0\u2028", "no-break space, line separator"),
    ("\U000e0041".encode(), r"\U000e0041", "a tag character (format, above U+FFFF)"),
    (b"", "", "empty"),
])
def test_printable_bytes(raw, shown, why):
    assert printable(raw) == shown, why
    assert unescape(shown) == raw, why


@pytest.mark.parametrize("text, shown", [
    ("\x1b[31mRED\x1b[0m", r"\x1b[31mRED\x1b[0m"),
    ("back\\slash", r"back\\slash"),
    ("caf\udce9", r"caf\xe9"),  # surrogateescape'd byte, as os.fsdecode gives it
    ("lone \ud800", r"lone \ud800"),
    ("plain", "plain"),
])
def test_printable_str(text, shown):
    assert printable(text) == shown


def test_output_pass_keeps_backslashes_of_escaped_text():
    # What netwatchctl and the journal apply to strings already escaped: idempotent on them,
    # and still nothing raw gets through.
    assert printable(r"\x1b[31mRED\x1b[0m", escape_backslash=False) == r"\x1b[31mRED\x1b[0m"
    assert printable("\x1b[31mRED\\", escape_backslash=False) == "\\x1b[31mRED\\"
    assert printable("\u202e", escape_backslash=False) == r"\u202e"


@pytest.mark.parametrize("text", ["\\", "a\\", "\\q", "\\x1", "\\xg0", "\\u12", "\\U0011ffff"])
def test_unescape_refuses_what_printable_never_writes(text):
    with pytest.raises(ValueError):
        unescape(text)


@QUICK
@given(st.binary(max_size=64))
def test_any_bytes_become_printable_and_come_back(raw):
    shown = printable(raw)
    assert shown.isprintable()
    assert unescape(shown) == raw
    assert printable(shown, escape_backslash=False) == shown


@QUICK
@given(st.text(max_size=32))
def test_any_text_becomes_printable(text):
    shown = printable(text)
    assert shown.isprintable()
    assert printable(shown, escape_backslash=False) == shown
