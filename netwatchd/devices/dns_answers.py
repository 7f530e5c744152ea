"""Which DNS answers count (pure): only an answer to a question seen going the other way.

Any device can send a DNS *response* to anyone: "c2.example A <someone else's address>" sent
unasked would rename that device and label the sender's call-home destination. So a question a
device sends (a query on its port's ingress) is remembered by everything its answer must echo
-- the asking device, its address and port, the server's address, the DNS id, the question --
and an answer going back to that device (on its port's egress) counts only when it matches one,
once. What the answer says is then the asking device's own view of the names: kept for that
device (netwatchd.devices.app_metadata), never for everyone.

Within a matched answer, only the records that belong to the question count: A/AAAA records of
the asked name or of a name a CNAME in the same answer led to (records for other names are how
cache poisoning rides along), a PTR record only for the PTR name asked.

Bounded: at most MAX_PENDING questions wait, MAX_PENDING_PER_DEVICE of them per device (a
device that floods queries pushes out its own first), each for at most ANSWER_WAIT_USEC.
What is dropped or does not match is counted, never an error.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from netwatchd.devices.dns import DnsMessage

MAX_PENDING = 4096
MAX_PENDING_PER_DEVICE = 64
ANSWER_WAIT_USEC = 10_000_000  # resolvers give up well before (glibc: 5 s per try)

# (device MAC, client address, client port, server address, DNS id, question name, question type)
QuestionKey = Tuple[str, str, int, str, int, str, str]


@dataclass
class AnswerCounts:
    matched: int = 0
    unsolicited: int = 0  # answers that matched no question: unasked, late, or forged
    questions_dropped: int = 0  # questions pushed out unanswered by the bounds


def question_key(mac: str, client: str, client_port: int, server: str, msg: DnsMessage) -> QuestionKey:
    q = msg.questions[0]
    return (mac, client, client_port, server, msg.id, q.name.lower(), q.qtype)


class PendingQuestions:
    def __init__(self) -> None:
        self._pending: "OrderedDict[QuestionKey, int]" = OrderedDict()  # key -> asked at (usec)
        self._per_device: Dict[str, int] = {}
        self.counts = AnswerCounts()

    def __len__(self) -> int:
        return len(self._pending)

    def asked(self, key: QuestionKey, when_usec: int) -> None:
        self._expire(when_usec)
        if key in self._pending:
            self._pending.move_to_end(key)  # a retry of the same question: one wait
            self._pending[key] = when_usec
            return
        mac = key[0]
        if self._per_device.get(mac, 0) >= MAX_PENDING_PER_DEVICE:
            self._drop(next(k for k in self._pending if k[0] == mac))
        if len(self._pending) >= MAX_PENDING:
            self._drop(next(iter(self._pending)))
        self._pending[key] = when_usec
        self._per_device[mac] = self._per_device.get(mac, 0) + 1

    def answered(self, key: QuestionKey, when_usec: int) -> bool:
        """True, once, when `key` was asked and is still waiting."""
        self._expire(when_usec)
        if self._pending.pop(key, None) is None:
            self.counts.unsolicited += 1
            return False
        self._forget(key[0])
        self.counts.matched += 1
        return True

    def forget_device(self, mac: str) -> None:
        for key in [k for k in self._pending if k[0] == mac]:
            del self._pending[key]
        self._per_device.pop(mac, None)

    def _drop(self, key: QuestionKey) -> None:
        del self._pending[key]
        self._forget(key[0])
        self.counts.questions_dropped += 1

    def _forget(self, mac: str) -> None:
        left = self._per_device.get(mac, 0) - 1
        if left > 0:
            self._per_device[mac] = left
        else:
            self._per_device.pop(mac, None)

    def _expire(self, now_usec: int) -> None:
        while self._pending:
            key, asked = next(iter(self._pending.items()))
            if now_usec - asked <= ANSWER_WAIT_USEC:
                return
            del self._pending[key]
            self._forget(key[0])


def answered_addresses(msg: DnsMessage) -> List[Tuple[str, str]]:
    """(address, name) pairs a matched answer gives: A/AAAA records of the asked name, or of a
    name a CNAME of this answer led to; each named by the name that was asked."""
    asked = msg.questions[0].name.lower()
    names = {asked}
    out = []
    for answer in msg.answers:  # CNAMEs come before the records they lead to (RFC 1034 3.6.2)
        owner = answer.name.lower()
        if owner not in names:
            continue
        if answer.rtype == "CNAME" and answer.value:
            names.add(answer.value.lower())
        elif answer.rtype in ("A", "AAAA") and answer.value:
            out.append((answer.value, asked))
    return out


def answered_ptr(msg: DnsMessage) -> Optional[Tuple[str, str]]:
    """(PTR name asked, host name) of a matched reverse lookup, or None."""
    q = msg.questions[0]
    if q.qtype != "PTR":
        return None
    for answer in msg.answers:
        if answer.rtype == "PTR" and answer.value and answer.name.lower() == q.name.lower():
            return q.name, answer.value
    return None
