"""Malformed ring-buffer records, shared by the connect and device engines: a record that does
not decode is counted and logged (the first, then every 10000th), never fatal. RecordDecoder
decodes record by record (the devices'); the connect path checks a drain's array at once and
counts what it drops in a MalformedRecords."""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator, Type, TypeVar

T = TypeVar("T")

LOG_EVERY = 10000


class MalformedRecords:
    """How many records of one kind were dropped as malformed; logs the first, then each time
    the count passes another LOG_EVERY (whether they come one by one or a drain's worth at once)."""

    def __init__(self, what: str, log: logging.Logger):
        self.what = what  # "connect records", in "dropped malformed connect records"
        self.log = log
        self.count = 0

    def add(self, n: int, reason: str) -> None:
        if n <= 0:
            return
        before, self.count = self.count, self.count + n
        if before == 0 or before // LOG_EVERY != self.count // LOG_EVERY:
            self.log.warning("dropped malformed %s (%d so far): %s", self.what, self.count, reason)


class RecordDecoder:
    def __init__(self, decode: Callable[[bytes], T], malformed: Type[Exception], what: str,
                 log: logging.Logger):
        self.decode = decode
        self.malformed_type = malformed
        self.dropped = MalformedRecords(what, log)

    @property
    def malformed(self) -> int:
        return self.dropped.count

    def decode_all(self, raw: Iterable[bytes]) -> Iterator[T]:
        for item in raw:
            try:
                yield self.decode(item)
            except self.malformed_type as e:
                self.dropped.add(1, str(e))
