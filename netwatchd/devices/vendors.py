"""MAC address -> vendor, from the IEEE registry files Debian ships in the ieee-data package.

The IEEE hands out blocks of three sizes: MA-L (24-bit prefix, oui.csv), MA-M (28 bits, mam.csv)
and MA-S (36 bits, oui36.csv; its predecessor IAB, iab.csv, is 36 bits too). The smaller blocks
are carved out of MA-Ls registered to "IEEE Registration Authority", so only the longest matching
prefix names the real vendor. One dict per prefix length, keyed by the prefix as an int, makes a
lookup three dict probes and keeps load time and memory small (~46k rows).

A locally administered MAC (bit 0x02 of the first octet) was not assigned by the IEEE: phones and
laptops make them up for privacy, so such a MAC has no vendor however its first bytes read.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Tuple

from netwatchd.devices.model import normalize_mac

log = logging.getLogger(__name__)

DEFAULT_DIRECTORY = "/usr/share/ieee-data"

# file -> prefix length in bits. Both 36-bit registries share one table: the IEEE never assigns
# the same 36-bit block twice.
REGISTRY_FILES: Tuple[Tuple[str, int], ...] = (
    ("oui.csv", 24),
    ("mam.csv", 28),
    ("oui36.csv", 36),
    ("iab.csv", 36),
)
PREFIX_BITS = (36, 28, 24)  # longest first: the order lookup tries them in

LOCALLY_ADMINISTERED = 0x02  # in the first octet
MULTICAST = 0x01  # in the first octet (the I/G bit)


def mac_to_int(mac: str) -> int:
    """'aa:bb:cc:dd:ee:ff' (or any spelling normalize_mac takes) -> 48-bit int; ValueError if not a MAC."""
    # The daemon passes canonical MACs; checking the shape first skips normalize_mac's work for them.
    if len(mac) == 17 and mac[2::3] == ":::::":
        try:
            return int(mac.replace(":", ""), 16)
        except ValueError:
            pass  # not hex: let normalize_mac give the error message
    return int(normalize_mac(mac).replace(":", ""), 16)


def is_randomized(mac: str) -> bool:
    """The locally administered bit is set: a made-up (private, randomized) address, not an IEEE one."""
    return bool((mac_to_int(mac) >> 40) & LOCALLY_ADMINISTERED)


def is_multicast(mac: str) -> bool:
    """The group bit is set: a multicast or broadcast destination, never a device's own address."""
    return bool((mac_to_int(mac) >> 40) & MULTICAST)


@dataclass
class LoadReport:
    """What load() found: entries per file, rows skipped as malformed, files that were missing."""

    entries: Dict[str, int] = field(default_factory=dict)
    skipped: Dict[str, int] = field(default_factory=dict)
    missing: List[str] = field(default_factory=list)


def parse_registry_rows(
    lines: Iterable[str], bits: int, names: Dict[str, str]
) -> Tuple[Dict[int, str], int, int]:
    """CSV lines of one registry file -> ({prefix: organization}, rows skipped, duplicates ignored).

    A row is skipped when it lacks the organization column, its assignment is not hex of the
    length this file's block size implies, or its organization is empty or spans lines (an
    unterminated quote swallowed the rows after it; those are lost with it). The first registration
    of a prefix wins over later duplicates (oui.csv lists a few historic prefixes twice).
    `names` interns organization strings across files: Cisco, Apple and "Private" repeat
    thousands of times and need be stored once.
    """
    digits = bits // 4
    table: Dict[int, str] = {}
    skipped = duplicates = 0
    reader = csv.reader(lines)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:  # e.g. a field over csv's size limit; the reader resumes on the next line
            skipped += 1
            continue
        if len(row) < 3:
            if row:  # blank lines are not worth counting
                skipped += 1
            continue
        assignment, organization = row[1].strip(), row[2].strip()
        if row[0] == "Registry" and assignment == "Assignment":
            continue  # the header
        if len(assignment) != digits or not organization or "\n" in organization:
            skipped += 1
            continue
        try:
            prefix = int(assignment, 16)
        except ValueError:
            skipped += 1
            continue
        if prefix in table:
            duplicates += 1
            continue
        table[prefix] = names.setdefault(organization, organization)
    return table, skipped, duplicates


class VendorDb:
    """Longest-prefix vendor lookup over the IEEE MA-L, MA-M, MA-S and IAB registries."""

    def __init__(self, tables: Dict[int, Dict[int, str]] | None = None, report: LoadReport | None = None):
        tables = tables or {}
        self._tables: List[Tuple[int, Dict[int, str]]] = [(bits, tables.get(bits, {})) for bits in PREFIX_BITS]
        self.report = report or LoadReport()

    @classmethod
    def load(cls, directory: str = DEFAULT_DIRECTORY) -> "VendorDb":
        """Reads the registry files. Never raises for missing or damaged data: the daemon runs on
        without vendors (they are then ''), and a warning says what is missing or was skipped."""
        report = LoadReport()
        tables: Dict[int, Dict[int, str]] = {bits: {} for bits in PREFIX_BITS}
        if not os.path.isdir(directory):
            report.missing.append(directory)
            log.warning("MAC vendors unknown: %s is missing (install the ieee-data package)", directory)
            return cls(tables, report)
        names: Dict[str, str] = {}
        for filename, bits in REGISTRY_FILES:
            path = os.path.join(directory, filename)
            try:
                # errors="replace": one stray byte must not cost the whole file.
                with open(path, newline="", encoding="utf-8", errors="replace") as f:
                    table, skipped, _duplicates = parse_registry_rows(f, bits, names)
            except OSError as e:
                report.missing.append(path)
                log.warning("MAC vendors of %d-bit blocks unknown: cannot read %s: %s", bits, path, e.strerror or e)
                continue
            for prefix, organization in table.items():
                tables[bits].setdefault(prefix, organization)
            report.entries[filename] = len(table)
            if skipped:
                report.skipped[filename] = skipped
                log.warning("%s: skipped %d malformed row(s)", path, skipped)
        return cls(tables, report)

    def __len__(self) -> int:
        return sum(len(table) for _, table in self._tables)

    def lookup(self, mac: str) -> str:
        """Organization registered for the longest block holding `mac`; '' when none is, or when
        the MAC is locally administered. ValueError if `mac` is not a MAC address."""
        value = mac_to_int(mac)
        if (value >> 40) & LOCALLY_ADMINISTERED:
            return ""
        for bits, table in self._tables:
            organization = table.get(value >> (48 - bits))
            if organization is not None:
                return organization
        return ""
