"""The beacons allow-list over columns (pure): AllowList.allows for many pairs at once.

netwatchd/beacon_allow.py parses the entries and answers for one pair; the beacon tracker asks
for every new pair of a tick (100k on a busy host) and for every tracked pair on a reload, so
here the same answer is computed the way each kind of entry allows it:
  commands      once per distinct source (a tick has few)
  names         once per pair that has a name (device pairs only; only with trust_dns_names)
  destinations  per rule (a handful), vectorised over the pairs: the address as two big-endian
                64-bit halves masked to the rule's prefix, the family and the port compared
An address is matched by the rules of its own family only, as ipaddress does (an IPv4 network
holds no IPv6 address, IPv4-mapped ones included).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from netwatchd.beacon_allow import AllowList, name_matches

_U64 = np.uint64
_ALL = (1 << 64) - 1


def halves(address: np.ndarray) -> np.ndarray:
    """(n, 16) uint8 addresses in network byte order -> (n, 2) uint64, the high and low halves."""
    return np.ascontiguousarray(address, np.uint8).view(">u8").astype(_U64)


class AllowColumns:
    def __init__(self, allow: AllowList):
        self.allow = allow
        self.rules = []  # (family: 0 any, 4, 6; value hi, lo; mask hi, lo; port: 0 any)
        for rule in allow.destinations:
            if rule.network is None:
                self.rules.append((0, 0, 0, 0, 0, rule.port))
                continue
            net = rule.network
            shift = 96 if net.version == 4 else 0  # IPv4 sits in the first 4 of the 16 bytes
            value = int(net.network_address) << shift
            mask = (((1 << net.prefixlen) - 1) << (net.max_prefixlen - net.prefixlen)) << shift
            self.rules.append((net.version, value >> 64, value & _ALL, mask >> 64, mask & _ALL, rule.port))

    def command(self, source: str) -> bool:
        kind, _, who = source.partition(":")
        return kind == "command" and who in self.allow.commands

    def commands(self, sources: Sequence[str]) -> np.ndarray:
        """Per source: allowed as a command (whatever the destination)."""
        return np.array([self.command(s) for s in sources], dtype=bool)

    def name(self, name: str) -> bool:
        return bool(name) and self.allow.trust_names and any(name_matches(p, name) for p in self.allow.names)

    def destinations(self, family: np.ndarray, address: np.ndarray, port: np.ndarray) -> np.ndarray:
        """Per pair: allowed by a destination rule (`address` as (n, 2) uint64 halves, see halves())."""
        out = np.zeros(len(family), dtype=bool)
        for fam, hi, lo, mask_hi, mask_lo, rule_port in self.rules:
            hit = np.ones(len(family), dtype=bool) if not rule_port else port == rule_port
            if fam:
                hit &= family == fam
                hit &= (address[:, 0] & _U64(mask_hi)) == _U64(hi)
                hit &= (address[:, 1] & _U64(mask_lo)) == _U64(lo)
            out |= hit
        return out

    def pairs(self, source_allowed: np.ndarray, family: np.ndarray, address: np.ndarray, port: np.ndarray,
              names: Dict[int, str]) -> np.ndarray:
        """AllowList.allows for each pair: `source_allowed` per pair (commands() of its source),
        `names` {pair index: name} for the pairs that have one."""
        out = source_allowed | self.destinations(family, address, port)
        if self.allow.trust_names and self.allow.names:
            named: List[int] = [i for i, name in names.items() if self.name(name)]
            out[np.asarray(named, dtype=np.int64)] = True
        return out
