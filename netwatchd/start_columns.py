"""Connection starts as columns (pure): one row per start, for the beacon tracker.

A busy host makes about 100k distinct (command, destination, port) pairs a tick; as Python lists
(TickObservation.connection_starts: [source, destination, port, name, [times]] per pair) every
start costs objects to build, to JSON and to look up. StartColumns holds the same as numpy
columns: the connect monitor builds them with numpy (netwatchd/connects/), the tick history
stores them as base64 columns in its JSON (to_json_value), and the beacon tracker
(netwatchd/alerting/beacons.py) takes a whole tick's starts at once. (Here, beside the engines:
they share it and import no module of each other.)

  sources    the distinct sources of these rows ("command:curl", "device:aa:bb:cc:dd:ee:ff")
  source     int32 per row: index into sources
  family     uint8 per row: 4 or 6
  address    uint8 (n, 16) per row: the address in network byte order, IPv4 in the first 4 bytes
  port       uint16 per row, host order
  time_usec  int64 per row: wall-clock microseconds of the start (any order)
  names      {row: DNS/TLS name}, only rows that have one (device starts)

Addresses read back as text as the rest of netwatchd spells them (address_text: inet_ntop for
IPv4, ipaddress's own spelling for IPv6, as netwatchd/connects/records.py and
netwatchd/devices/records.py write them).
"""
from __future__ import annotations

import base64
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

FIELDS = ("source", "family", "port", "time_usec")
DTYPES = {"source": np.int32, "family": np.uint8, "port": np.uint16, "time_usec": np.int64}
# how the tick history stores each column (to_json_value): little-endian, whatever the host
COLUMNS = {"source": np.dtype("<i4"), "family": np.dtype("u1"), "address": np.dtype("u1"), "port": np.dtype("<u2"),
           "time_usec": np.dtype("<i8")}


def address_bytes(text: Any) -> Optional[Tuple[int, bytes]]:
    """'192.0.2.1' -> (4, its 4 bytes + 12 zeros); '2001:db8::1' -> (6, 16 bytes); None when
    it is not an address."""
    if not isinstance(text, str):
        return None
    try:
        if ":" in text:
            return 6, socket.inet_pton(socket.AF_INET6, text)
        return 4, socket.inet_pton(socket.AF_INET, text) + bytes(12)
    except (OSError, ValueError):
        return None


def address_text(family: int, raw: bytes) -> str:
    """The text of an address column's 16 bytes (the first 4 for IPv4)."""
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, bytes(raw[:4]))
    return str(ipaddress.IPv6Address(bytes(raw[:16])))


@dataclass(eq=False)
class StartColumns:
    sources: List[str]
    source: np.ndarray
    family: np.ndarray
    address: np.ndarray
    port: np.ndarray
    time_usec: np.ndarray
    names: Dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StartColumns):
            return NotImplemented
        return (self.sources == other.sources and self.names == other.names
                and all(np.array_equal(getattr(self, f), getattr(other, f)) for f in FIELDS + ("address",)))

    def __repr__(self) -> str:
        return f"StartColumns({len(self)} starts, {len(self.sources)} sources, {len(self.names)} named)"

    @classmethod
    def empty(cls) -> "StartColumns":
        return cls([], *(np.zeros(0, DTYPES[f]) for f in ("source", "family")), np.zeros((0, 16), np.uint8),
                   np.zeros(0, np.uint16), np.zeros(0, np.int64))

    @classmethod
    def from_lists(cls, starts: Iterable[list]) -> "StartColumns":
        """TickObservation.connection_starts entries ([source, destination, port, name, [times,
        usec]]) -> one row per time. An entry whose destination is not an address or whose port
        is not 0..65535 is left out (none of ours writes one)."""
        ids: Dict[str, int] = {}
        parsed: Dict[str, Optional[Tuple[int, bytes]]] = {}
        source, family, address, port, times = [], [], [], [], []
        names: Dict[int, str] = {}
        for entry in starts:
            src, destination, p, name, when = entry
            try:
                where = parsed[destination]
            except KeyError:
                where = parsed[destination] = address_bytes(destination)
            k = len(when)
            if where is None or not k or not isinstance(p, (int, np.integer)) or not 0 <= p <= 0xFFFF:
                continue
            if name:
                names.update((row, name) for row in range(len(times), len(times) + k))
            src = str(src)
            sid = ids.get(src)
            if sid is None:
                sid = ids[src] = len(ids)
            source += [sid] * k
            family += [where[0]] * k
            address += [where[1]] * k
            port += [p] * k
            times += [int(t) for t in when]
        if not times:
            return cls.empty()
        return cls(list(ids), np.array(source, np.int32), np.array(family, np.uint8),
                   np.frombuffer(b"".join(address), np.uint8).reshape(-1, 16).copy(), np.array(port, np.uint16),
                   np.array(times, np.int64), names)

    @classmethod
    def concat(cls, parts: Iterable["StartColumns"]) -> "StartColumns":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        ids: Dict[str, int] = {}
        sources, names, base = [], {}, 0
        for p in parts:
            remap = np.array([ids.setdefault(s, len(ids)) for s in p.sources], np.int32)
            sources.append(remap[p.source])
            names.update((base + row, name) for row, name in p.names.items())
            base += len(p)
        return cls(list(ids), np.concatenate(sources), *(np.concatenate([getattr(p, f) for p in parts])
                                                         for f in ("family", "address", "port", "time_usec")),
                   names)

    def address_text(self, row: int) -> str:
        return address_text(int(self.family[row]), self.address[row].tobytes())

    def to_json_value(self) -> Dict[str, Any]:
        """JSON's own types: every column as base64 of its little-endian bytes (a busy tick's
        100k starts encode in a few milliseconds, where lists of numbers took tens), the sources
        as a list, names keyed by row (as text: JSON keys are strings)."""
        value: Dict[str, Any] = {"sources": list(self.sources)}
        for f in COLUMNS:
            value[f] = base64.b64encode(np.ascontiguousarray(getattr(self, f), COLUMNS[f]).tobytes()).decode("ascii")
        if self.names:
            value["names"] = {str(row): name for row, name in self.names.items()}
        return value

    @classmethod
    def from_json_value(cls, value: Dict[str, Any]) -> "StartColumns":
        """What to_json_value wrote; ValueError when it is not that (a damaged record)."""
        if not isinstance(value, dict) or not isinstance(value.get("names", {}), dict):
            raise ValueError("start columns are not an object of columns")
        try:
            columns = {f: np.frombuffer(base64.b64decode(value.get(f, ""), validate=True), dtype)
                       for f, dtype in COLUMNS.items()}
        except (TypeError, ValueError) as e:  # not base64, or not a whole number of items
            raise ValueError(f"start columns: {e}") from None
        n = len(columns["source"])
        sources = [str(s) for s in value.get("sources", [])]
        if (any(len(c) != n * (16 if f == "address" else 1) for f, c in columns.items())
                or (n and not 0 <= int(columns["source"].min()) <= int(columns["source"].max()) < len(sources))):
            raise ValueError("start columns of different lengths, or sources out of range")
        names = {int(row): str(name) for row, name in value.get("names", {}).items()}
        return cls(sources, columns["source"].astype(np.int32), columns["family"].astype(np.uint8),
                   columns["address"].reshape(n, 16).copy(), columns["port"].astype(np.uint16),
                   columns["time_usec"].astype(np.int64), names)
