"""Untrusted bytes and strings as text that is safe to print (pure).

Process names (anyone can set their own with prctl(PR_SET_NAME)), unix socket paths, and what
devices on the LAN send (DNS names, HTTP hosts, TLS server names, DHCP hostnames) reach
netwatchctl's terminal, D-Bus and JSON answers, and journald. `printable` turns them into text
in which every character is printable, so none of it can move a cursor, set a colour, write the
clipboard (OSC 52), reorder a line (bidi overrides) or hide what follows:

- a character that str.isprintable() rejects (C0 and C1 controls, DEL, format characters such
  as U+202E, separators other than the space, surrogates, private use, unassigned) becomes
  `\\xHH` below U+0080, else `\\uHHHH` (`\\UHHHHHHHH` above U+FFFF);
- a byte that is not part of valid UTF-8 (always 0x80-0xff) becomes `\\xHH`;
- a backslash becomes `\\\\`, so text can never look like an escape it is not;
- everything else (printable Unicode included) stays as it is.

`\\xHH` is always the byte HH, and the form is reversible (`unescape`): what netwatchd shows is
what a user types back to ask about it (Summary's command, beacons.allow_commands).

The outputs (netwatchctl's rendering, journald) escape once more with escape_backslash=False:
their strings are already escaped, and that pass only makes sure no raw control character from
anywhere else gets through, without doubling the backslashes of escapes already there.
"""
from __future__ import annotations

from typing import Union

_HEX = "0123456789abcdef"
# The characters hostile names use most (C0, DEL, C1, the backslash), escaped by str.translate in
# C; whatever else is not printable (format characters, undecodable bytes) by the loop after it.
_COMMON = {c: "\\x%02x" % c for c in [*range(0x20), 0x7F]}
_COMMON.update({c: "\\u%04x" % c for c in range(0x80, 0xA0)})
_COMMON_KEEP_BACKSLASH = dict(_COMMON)
_COMMON[ord("\\")] = "\\\\"


def printable(value: Union[bytes, str], escape_backslash: bool = True) -> str:
    """`value` with every non-printable character, invalid UTF-8 byte and (by default) backslash
    escaped. In a str, U+DC80..U+DCFF are the undecodable bytes they stand for (Python's
    surrogateescape, as os.fsdecode makes them) and come out as `\\xHH` too."""
    if isinstance(value, (bytes, bytearray)):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("utf-8", "surrogateescape")
    else:
        text = value
    # the common case, one C pass each: nothing to escape
    if text.isprintable() and not (escape_backslash and "\\" in text):
        return text
    text = text.translate(_COMMON if escape_backslash else _COMMON_KEEP_BACKSLASH)
    if text.isprintable():
        return text
    return "".join(_escaped(c) for c in text)  # its backslashes are escaped already


def _escaped(c: str) -> str:
    if c.isprintable():
        return c
    point = ord(c)
    if point < 0x80:
        return "\\x" + _HEX[point >> 4] + _HEX[point & 15]
    if 0xDC80 <= point <= 0xDCFF:  # an undecodable byte (surrogateescape)
        return "\\x%02x" % (point - 0xDC00)
    if point <= 0xFFFF:
        return "\\u%04x" % point
    return "\\U%08x" % point


def unescape(text: str) -> bytes:
    """The bytes `printable` was given: `unescape(printable(b)) == b` for any bytes b.
    Raises ValueError on a backslash that starts no escape `printable` writes."""
    out = bytearray()
    pos, size = 0, len(text)
    while pos < size:
        slash = text.find("\\", pos)
        if slash < 0:
            out += text[pos:].encode("utf-8", "surrogatepass")
            break
        out += text[pos:slash].encode("utf-8", "surrogatepass")
        kind = text[slash + 1 : slash + 2]
        digits = {"x": 2, "u": 4, "U": 8}.get(kind, 0)
        if kind == "\\":
            out += b"\\"
            pos = slash + 2
            continue
        hex_digits = text[slash + 2 : slash + 2 + digits]
        if not digits or len(hex_digits) != digits or any(h not in _HEX + "ABCDEF" for h in hex_digits):
            raise ValueError("%r: a backslash at %d starts no escape (\\\\, \\xHH, \\uHHHH or \\UHHHHHHHH)"
                             % (text, slash))
        point = int(hex_digits, 16)
        if kind == "x":
            out.append(point)
        elif point > 0x10FFFF:
            raise ValueError("%r: %s is beyond Unicode" % (text, text[slash : slash + 2 + digits]))
        else:
            out += chr(point).encode("utf-8", "surrogatepass")
        pos = slash + 2 + digits
    return bytes(out)
