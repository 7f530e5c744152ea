"""Decoding raw ring-buffer records, shared by the connect and device engines: a record that
does not decode is counted and logged (the first, then every 10000th), never fatal."""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator, Type, TypeVar

T = TypeVar("T")

LOG_EVERY = 10000


class RecordDecoder:
    def __init__(self, decode: Callable[[bytes], T], malformed: Type[Exception], what: str,
                 log: logging.Logger):
        self.decode = decode
        self.malformed_type = malformed
        self.what = what  # "connect records", in "dropped malformed connect records"
        self.log = log
        self.malformed = 0

    def decode_all(self, raw: Iterable[bytes]) -> Iterator[T]:
        for item in raw:
            try:
                yield self.decode(item)
            except self.malformed_type as e:
                self.malformed += 1
                if self.malformed == 1 or self.malformed % LOG_EVERY == 0:
                    self.log.warning("dropped malformed %s (%d so far): %s", self.what, self.malformed, e)
