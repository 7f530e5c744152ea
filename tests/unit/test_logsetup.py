"""Log lines: whatever a message interpolates, no control character reaches journald or stderr."""
import logging

from netwatchd.logsetup import PrintableMessages


def record(msg, *args):
    return logging.LogRecord("netwatchd.x", logging.WARNING, __file__, 1, msg, args, None)


def test_a_raw_control_character_in_a_log_line_is_escaped():
    r = record("cannot watch %s: %s", "eth\x1b[2J0", "gone\n")
    assert PrintableMessages().filter(r) is True
    assert r.getMessage() == r"cannot watch eth\x1b[2J0: gone\x0a"


def test_printable_lines_and_escapes_already_there_are_left_alone():
    r = record("interface %s is gone", r"a\x1b")
    PrintableMessages().filter(r)
    assert r.getMessage() == r"interface a\x1b is gone" and r.args == (r"a\x1b",)
