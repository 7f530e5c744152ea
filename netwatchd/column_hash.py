"""A 64-bit hash per row of uint64 columns (pure), shared by the connect engine (a tick's
connection starts grouped by flow, netwatchd/connects/batches.py) and the beacon tracker (its
pair index, netwatchd/alerting/pair_table.py): splitmix64's finaliser over each column in turn,
from a seed. Rows with equal columns hash alike; different rows may too, so both users compare
the whole key where it matters. A seed nobody else knows (the tracker's: Python's per-process
hash secret) keeps anyone from choosing rows that collide."""
from __future__ import annotations

from typing import Sequence

import numpy as np

_U64 = np.uint64


def splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (uint64 arithmetic wraps)."""
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def hash_columns(columns: Sequence[np.ndarray], seed: int = 0) -> np.ndarray:
    h = np.full(len(columns[0]), seed & ((1 << 64) - 1), dtype=_U64)
    for column in columns:
        h = splitmix(h ^ column.astype(_U64, copy=False))
    return h
