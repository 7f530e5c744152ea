"""The man pages that have a source elsewhere, and the D-Bus interface file (`make man`).

    netwatchd.yaml.5             man/netwatchd.yaml.5.in + config/netwatchd.yaml: every key with
                                 its default and the comment above it, as the shipped file has them;
                                 exactly the keys netwatchd/config.py declares restart-only (field
                                 metadata) must say "Restart to change." there
    org.netwatchd.Netwatchd1.5   man/org.netwatchd.Netwatchd1.5.in + the service's introspection:
                                 the interface listing and each member's signature
    systemd/org.netwatchd.Netwatchd1.Manager.xml   the introspection as D-Bus XML

The generated files are committed (a package build needs no D-Bus library to make them);
tests/unit/test_man_pages.py fails when one differs from what its sources generate now.
Run with the venv's Python (it imports netwatchd.config and netwatchd.api.dbus):
.venv/bin/python man/generate.py
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "netwatchd.yaml"
YAML_TEMPLATE = ROOT / "man" / "netwatchd.yaml.5.in"
YAML_PAGE = ROOT / "man" / "netwatchd.yaml.5"
DBUS_TEMPLATE = ROOT / "man" / "org.netwatchd.Netwatchd1.5.in"
DBUS_PAGE = ROOT / "man" / "org.netwatchd.Netwatchd1.5"
DBUS_XML = ROOT / "systemd" / "org.netwatchd.Netwatchd1.Manager.xml"


class SourceError(Exception):
    """A template and its source disagree (a member or key documented twice, or not at all)."""


def roff_text(text: str) -> str:
    """Plain text as roff: backslashes escaped, no line read as a request."""
    lines = text.replace("\\", "\\e").splitlines()
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in lines)


# ---------------------------------------------------------------- netwatchd.yaml(5)
@dataclass
class ConfigKey:
    path: str  # "connections.max_window_sec"
    default: str  # as written in the shipped file
    comment: List[str] = field(default_factory=list)


def config_keys(yaml_text: str) -> Tuple[List[str], List[ConfigKey]]:
    """(the file's opening comment, every key in order). A key's description is the block of
    comment lines right above it; a section (a key with nothing after the colon) prefixes the
    keys indented under it."""
    lines = yaml_text.splitlines()
    header: List[str] = []
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        header.append(lines[i][1:].strip())
        i += 1
    keys: List[ConfigKey] = []
    sections: List[Tuple[int, str]] = []
    comment: List[str] = []
    for line in lines[i:]:
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped[1:].strip())
            continue
        m = re.fullmatch(r"( *)([a-z0-9_]+):\s*(.*)", line)
        if not m:
            raise SourceError(f"{CONFIG.name}: cannot read line {line!r}")
        indent, name, value = len(m.group(1)), m.group(2), m.group(3)
        sections = [(d, s) for d, s in sections if d < indent]
        path = ".".join([s for _, s in sections] + [name])
        if value:
            keys.append(ConfigKey(path, value, comment))
        else:
            sections.append((indent, name))
        comment = []
    return header, keys


RESTART_NOTE = "Restart to change."


def restart_only_keys() -> List[str]:
    """The restart-only keys as netwatchd.config declares them (field metadata)."""
    from netwatchd.config import restart_only_keys as declared

    return declared()


def check_restart_notes(keys: List[ConfigKey], restart_only: List[str]) -> None:
    """Exactly the restart-only keys say so in their comment (and so in the page)."""
    says = {k.path for k in keys if RESTART_NOTE in " ".join(k.comment)}
    unsaid, wrong = sorted(set(restart_only) - says), sorted(says - set(restart_only))
    if unsaid:
        raise SourceError(f"{CONFIG.name}: the comment of restart-only {', '.join(unsaid)} does not say "
                          f"{RESTART_NOTE!r} (netwatchd/config.py declares it restart-only)")
    if wrong:
        raise SourceError(f"{CONFIG.name}: the comment of {', '.join(wrong)} says {RESTART_NOTE!r}, but "
                          "netwatchd/config.py does not declare it restart-only (a reload applies it)")


def yaml_page(template: str, yaml_text: str, restart_only: List[str] = None) -> str:
    _, keys = config_keys(yaml_text)
    check_restart_notes(keys, restart_only_keys() if restart_only is None else restart_only)
    out: List[str] = []
    section = None
    for key in keys:
        top = key.path.split(".")[0] if "." in key.path else ""
        if top != section:
            section = top
            out.append(f".SS {top}" if top else ".SS Top level")
        out += [".TP", f"\\fB{key.path}\\fR (default: \\fB{roff_text(key.default)}\\fR)"]
        out.append(roff_text(" ".join(key.comment)) if key.comment else "Undocumented.")
    lines = template.splitlines()
    if lines.count("@KEYS@") != 1:
        raise SourceError(f"{YAML_TEMPLATE.name}: needs exactly one line @KEYS@")
    at = lines.index("@KEYS@")
    return "\n".join(lines[:at] + out + lines[at + 1:]) + "\n"


# ---------------------------------------------------------------- org.netwatchd.Netwatchd1(5)
@dataclass
class Member:
    kind: str  # method, signal, property
    name: str
    args: List[Tuple[str, str, str]]  # (direction, type, name); a property: [("", type, access)]


def introspected_members() -> List[Member]:
    """The Manager interface as the service exports it (dbus-fast's own introspection)."""
    from netwatchd.api.dbus import ManagerInterface

    intro = ManagerInterface(None).introspect()
    members = []
    for m in sorted(intro.methods, key=lambda m: m.name):
        members.append(Member("method", m.name, [("in", a.signature, a.name or "") for a in m.in_args]
                              + [("out", a.signature, a.name or "") for a in m.out_args]))
    for s in sorted(intro.signals, key=lambda s: s.name):
        members.append(Member("signal", s.name, [("", a.signature, a.name or "") for a in s.args]))
    for p in sorted(intro.properties, key=lambda p: p.name):
        access = getattr(p.access, "value", str(p.access))
        members.append(Member("property", p.name, [("", p.signature, access)]))
    return members


def interface_xml(members: List[Member]) -> str:
    from netwatchd.bus_names import MANAGER_INTERFACE, OBJECT_PATH

    out = ['<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"',
           ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">',
           "<!-- Generated by man/generate.py from netwatchd's introspection: do not edit. -->",
           f'<node name="{OBJECT_PATH}">', f' <interface name="{MANAGER_INTERFACE}">']
    for m in members:
        if m.kind == "property":
            (_, sig, access), = m.args
            out.append(f'  <property name="{m.name}" type="{_xml(sig)}" access="{access}"/>')
            continue
        out.append(f'  <{m.kind} name="{m.name}">')
        for direction, sig, name in m.args:
            attrs = (f' name="{name}"' if name else "") + f' type="{_xml(sig)}"'
            attrs += f' direction="{direction}"' if direction else ""
            out.append(f"   <arg{attrs}/>")
        out.append(f"  </{m.kind}>")
    out += [" </interface>", "</node>", ""]
    return "\n".join(out)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def idl_listing(members: List[Member]) -> List[str]:
    """systemd's pseudo-IDL of an interface (as in org.freedesktop.login1(5))."""
    from netwatchd.bus_names import MANAGER_INTERFACE, OBJECT_PATH

    out = [f"node {OBJECT_PATH} {{", f"  interface {MANAGER_INTERFACE} {{"]
    for kind, heading in (("method", "methods"), ("signal", "signals"), ("property", "properties")):
        of_kind = [m for m in members if m.kind == kind]
        if not of_kind:
            continue
        out.append(f"    {heading}:")
        for m in of_kind:
            if kind == "property":
                (_, sig, access), = m.args
                out.append(f"      {'readonly ' if access == 'read' else ''}{sig} {m.name} = ...;")
                continue
            args = [" ".join(p for p in ((d.ljust(3) if kind == "method" else ""), sig, name) if p) for d, sig, name in m.args]
            if not args:
                out.append(f"      {m.name}();")
                continue
            pad = " " * (len(m.name) + 7)
            out.append(f"      {m.name}(" + f",\n{pad}".join(args) + ");")
    out += ["  };", "};"]
    return out


def member_heading(m: Member) -> str:
    if m.kind == "property":
        (_, sig, access), = m.args
        return f"\\fB{m.name}\\fR \\fI{roff_text(sig)}\\fR ({'read-only' if access == 'read' else access})"
    ins = [(sig, name) for d, sig, name in m.args if d != "out"]
    outs = [sig for d, sig, _ in m.args if d == "out"]
    text = f"\\fB{m.name}\\fR(" + ", ".join(f"\\fI{roff_text(s)}\\fR {n}".rstrip() for s, n in ins) + ")"
    if outs:
        text += " \\(-> " + ", ".join(f"\\fI{roff_text(s)}\\fR" for s in outs)
    return text


def dbus_page(template: str, members: List[Member]) -> str:
    by_name = {(m.kind, m.name): m for m in members}
    documented = set()
    out: List[str] = []
    for line in template.splitlines():
        if line == "@INTERFACE@":
            out += [".nf", ".in +2", *(roff_text(x) for x in "\n".join(idl_listing(members)).splitlines()), ".in", ".fi"]
            continue
        m = re.fullmatch(r"@(method|signal|property) (\w+)", line)
        if not m:
            out.append(line)
            continue
        key = (m.group(1), m.group(2))
        if key not in by_name:
            raise SourceError(f"{DBUS_TEMPLATE.name} documents the {key[0]} {key[1]}, which the service does not have")
        if key in documented:
            raise SourceError(f"{DBUS_TEMPLATE.name} documents the {key[0]} {key[1]} twice")
        documented.add(key)
        out += [".TP", member_heading(by_name[key])]
    missing = sorted(f"{k} {n}" for k, n in set(by_name) - documented)
    if missing:
        raise SourceError(f"{DBUS_TEMPLATE.name} does not document: {', '.join(missing)}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- all of them
def generated() -> dict:
    """{path: the text its sources generate now}."""
    members = introspected_members()
    return {
        YAML_PAGE: yaml_page(YAML_TEMPLATE.read_text(), CONFIG.read_text()),
        DBUS_PAGE: dbus_page(DBUS_TEMPLATE.read_text(), members),
        DBUS_XML: interface_xml(members),
    }


def main() -> int:
    sys.path.insert(0, str(ROOT))
    try:
        pages = generated()
    except SourceError as e:
        print(f"man/generate.py: {e}", file=sys.stderr)
        return 1
    for path, text in pages.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
