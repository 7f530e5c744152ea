"""Per tick and per device, what its DNS did (pure): the NXDOMAIN answers it received and the
names it asked, by registered domain (netwatchd/dns_domains.py). The tick's observation carries
it (TickObservation.dns_activity) to netwatchd/alerting/dns_anomalies.py.

Only facts about the device itself count (netwatchd/devices/app_metadata.py decides): a
question it sent, and an NXDOMAIN answer that answers one of its own questions
(dns_answers.py), so a forged NXDOMAIN sent to a device that asked nothing counts for nobody.

A name is "tunnel-like" when the part below its registered domain carries data rather than a
host's name. Measured on random labels (2000 each) and on real host names:
  - a label of LONG_LABEL (40) characters or more: random base32/36/hex labels that long;
    real host labels stay shorter (an AWS load balancer's, the longest seen, is about 35);
  - or, at least ENTROPY_MIN_LENGTH (24) characters below the domain (dots left out) with a
    Shannon entropy of HIGH_ENTROPY (3.5) bits a character or more: random base32/36 text of 24
    characters has a median of 4.0 and a 1st percentile of 3.5 (hex: 3.5 at 24, 3.6 at 60
    for the 1st percentile); real names that long are mostly 3.3-3.8 (ec2-203-0-113-25.compute-1:
    3.48), so a few count, and the alert wants many distinct ones. Shorter strings cannot
    reach a high entropy (at most log2 of their length) and are CDN hashes
    (d3kcewxqlx4gn7.cloudfront.net, 3.66 over 14): never counted.
A name asked again in the same tick (A, AAAA and HTTPS of one lookup) counts once.

Bounded per device and tick: MAX_DOMAINS domains (names and answers under more are counted
in `names_over` and `nxdomain_over` -- an NXDOMAIN beyond still counts for the device's burst, a
DGA's names being each a domain of its own -- and in `domains_over` since the start), MAX_NAMES_SEEN distinct names remembered for the repeat
check (beyond, every name counts as new: a flood cannot hide by it); at most MAX_DEVICES
devices a tick (the rest counted in `devices_over`). Everything is cleared by take().
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Dict, List, Set

from netwatchd.dns_domains import registered_domain

LONG_LABEL = 40
HIGH_ENTROPY = 3.5
ENTROPY_MIN_LENGTH = 24
MAX_DOMAINS = 64
MAX_NAMES_SEEN = 1024
MAX_DEVICES = 4096
NXDOMAIN = 3  # RFC 1035 4.1.1: RCODE 3, "Name Error"


def shannon_entropy(text: str) -> float:
    """Bits per character of `text`'s character distribution (0 for '')."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def below_domain(name: str, domain: str) -> str:
    """The labels of `name` under `domain` ('' for the domain itself)."""
    return name[: -len(domain) - 1] if name.endswith("." + domain) else ""


def longest_label(below: str) -> int:
    return max(map(len, below.split("."))) if below else 0


def tunnel_like(name: str, domain: str) -> bool:
    below = below_domain(name, domain)
    return _carries_data(below, longest_label(below))


def _carries_data(below: str, longest: int) -> bool:
    """The part below the domain, and its longest label: data rather than a host's name?"""
    if not below:
        return False
    if longest >= LONG_LABEL:
        return True
    data = below.replace(".", "")
    return len(data) >= ENTROPY_MIN_LENGTH and shannon_entropy(data) >= HIGH_ENTROPY


class DeviceDns:
    """One device's tick: NXDOMAIN answers and names asked, per registered domain."""

    def __init__(self) -> None:
        self.nxdomain: Dict[str, int] = {}  # domain -> NXDOMAIN answers
        self.names: Dict[str, List[int]] = {}  # domain -> [distinct names, tunnel-like, longest label]
        self.seen: Set[str] = set()
        self.domains: Set[str] = set()  # those of names and nxdomain together (at most MAX_DOMAINS)
        self.names_over = 0  # names asked under domains beyond MAX_DOMAINS
        self.nxdomain_over = 0  # NXDOMAIN answers under domains beyond MAX_DOMAINS: still the device's

    def _room(self, domain: str) -> bool:
        if domain not in self.domains:
            if len(self.domains) >= MAX_DOMAINS:
                return False
            self.domains.add(domain)
        return True

    def asked(self, name: str) -> bool:
        if name in self.seen:
            return True
        if len(self.seen) < MAX_NAMES_SEEN:
            self.seen.add(name)
        domain = registered_domain(name)
        if not self._room(domain):
            self.names_over += 1
            return False
        below = below_domain(name, domain)
        longest = longest_label(below)
        entry = self.names.setdefault(domain, [0, 0, 0])
        entry[0] += 1
        entry[1] += _carries_data(below, longest)
        entry[2] = max(entry[2], longest)
        return True

    def answered_nxdomain(self, name: str) -> bool:
        domain = registered_domain(name)
        if not self._room(domain):
            self.nxdomain_over += 1  # a DGA's names are each a domain of their own: counted all the same
            return False
        self.nxdomain[domain] = self.nxdomain.get(domain, 0) + 1
        return True

    def fact(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.nxdomain:
            out["nxdomain"] = self.nxdomain
        if self.names:
            out["names"] = self.names
        if self.nxdomain_over:
            out["nxdomain_over"] = self.nxdomain_over
        if self.names_over:
            out["names_over"] = self.names_over
        return out


class DnsTally:
    def __init__(self) -> None:
        self._devices: Dict[str, DeviceDns] = {}
        self.domains_over = 0  # since the start: names or answers beyond MAX_DOMAINS of a device's tick
        self.devices_over = 0  # ...and of devices beyond MAX_DEVICES in a tick

    def _device(self, mac: str):
        device = self._devices.get(mac)
        if device is None:
            if len(self._devices) >= MAX_DEVICES:
                self.devices_over += 1
                return None
            device = self._devices[mac] = DeviceDns()
        return device

    def asked(self, mac: str, name: str) -> None:
        """Device `mac` sent a question for `name`."""
        device = self._device(mac)
        if device is not None and not device.asked(name):
            self.domains_over += 1

    def answered(self, mac: str, name: str, rcode: int) -> None:
        """An answer to one of `mac`'s own questions (matched by the caller) came back."""
        if rcode != NXDOMAIN:
            return
        device = self._device(mac)
        if device is not None and not device.answered_nxdomain(name):
            self.domains_over += 1

    def take(self) -> Dict[str, Dict[str, Any]]:
        """The tick's facts, mac -> {"nxdomain": {domain: n}, "names": {domain: [distinct names,
        tunnel-like, longest label below the domain]}, "nxdomain_over": n, "names_over": n}; the
        tally starts afresh."""
        facts = {mac: device.fact() for mac, device in self._devices.items()}
        self._devices = {}
        return {mac: fact for mac, fact in facts.items() if fact}
