"""Offsets of kernel struct members, read from the running kernel's BTF (/sys/kernel/btf/vmlinux).

bcc compiles against kernel headers, and on a machine whose headers are another kernel's (the
distro's generic ones) `offsetof(struct sock, sk_err)` would be that other kernel's. The few
members the connect path reads from a socket are looked up here instead, in the type
information of the kernel that runs, and handed to the BPF program as -D flags: CO-RE done by
hand for two fields. Without BTF the caller falls back and says so.

Format: include/uapi/linux/btf.h (a header, then the type section, then the string section).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F

KIND_STRUCT, KIND_UNION = 4, 5
# Bytes that follow the 12-byte `struct btf_type`, per kind: fixed, and per vlen item.
_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0), 15: (0, 12),
          17: (4, 0), 19: (0, 12)}


class BtfError(Exception):
    """The BTF blob is missing, unreadable or lacks the member asked for."""


class _Composite:
    __slots__ = ("name", "members")

    def __init__(self, name: str, members: List[Tuple[str, int, int]]):
        self.name = name
        self.members = members  # (name, type id, bit offset)


def _types(blob: bytes) -> Tuple[Dict[int, _Composite], Dict[int, Tuple[int, int]], bytes]:
    """Structs and unions by type id; other types as (kind, referenced type) for resolving."""
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
    if magic != MAGIC:
        raise BtfError("not BTF (bad magic)")
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
    types_at = hdr_len + type_off
    strings = blob[hdr_len + str_off: hdr_len + str_off + str_len]

    def name(off: int) -> str:
        end = strings.index(b"\0", off)
        return strings[off:end].decode()

    composites: Dict[int, _Composite] = {}
    others: Dict[int, Tuple[int, int]] = {}
    pos, end, type_id = types_at, types_at + type_len, 1
    while pos < end:
        name_off, info, size_or_type = struct.unpack_from("<III", blob, pos)
        kind, vlen, bitfield_flag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        pos += 12
        fixed, per_item = _EXTRA.get(kind, (0, 0))
        if kind in (KIND_STRUCT, KIND_UNION):
            members = []
            for i in range(vlen):
                m_name, m_type, m_off = struct.unpack_from("<III", blob, pos + 12 * i)
                bit_offset = m_off & 0xFFFFFF if bitfield_flag else m_off
                members.append((name(m_name), m_type, bit_offset))
            composites[type_id] = _Composite(name(name_off), members)
        else:
            others[type_id] = (kind, size_or_type)
        pos += fixed + per_item * vlen
        type_id += 1
    return composites, others, strings


def _member_offset(composites, others, type_id: int, member: str) -> Optional[int]:
    """Bit offset of `member` in the struct `type_id`, looking into anonymous structs/unions."""
    for m_name, m_type, bit_offset in composites[type_id].members:
        if m_name == member:
            return bit_offset
        if m_name == "":
            inner = m_type
            while inner in others and others[inner][0] in (8, 9, 10, 11, 18):  # typedef/qualifiers
                inner = others[inner][1]
            if inner in composites:
                found = _member_offset(composites, others, inner, member)
                if found is not None:
                    return bit_offset + found
    return None


def member_offsets(wanted: List[Tuple[str, str]], blob: Optional[bytes] = None) -> Dict[Tuple[str, str], int]:
    """{(struct, member): byte offset} for each wanted pair; BtfError names what is missing."""
    if blob is None:
        try:
            blob = VMLINUX.read_bytes()
        except OSError as e:
            raise BtfError(f"cannot read {VMLINUX}: {e.strerror}") from None
    composites, others, _ = _types(blob)
    by_name: Dict[str, int] = {}
    for type_id, composite in composites.items():
        if composite.name and composite.name not in by_name and composite.members:
            by_name[composite.name] = type_id
    out = {}
    for struct_name, member in wanted:
        if struct_name not in by_name:
            raise BtfError(f"no struct {struct_name} in the kernel's BTF")
        bits = _member_offset(composites, others, by_name[struct_name], member)
        if bits is None or bits % 8:
            raise BtfError(f"no byte-aligned member {member} in struct {struct_name}")
        out[(struct_name, member)] = bits // 8
    return out


def iter_struct_names(blob: bytes) -> Iterator[str]:
    """Every named struct or union (for tests)."""
    composites, _, _ = _types(blob)
    return (c.name for c in composites.values() if c.name)
