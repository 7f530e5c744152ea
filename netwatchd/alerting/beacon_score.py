"""How regular a pair's connection starts are (pure, numpy, many pairs at once).

Learnt from RITA's beacon analysis (Active Countermeasures), which scores Zeek logs offline:
a beacon's inter-arrival times are symmetric around their median (Bowley skew near 0) and spread
little around it (median absolute deviation, MAD); more of them is more evidence. RITA cuts the
MAD off at an absolute 30 s; live, periods range from seconds to many minutes, so here the MAD
is taken relative to the median interval: a timer with +-25% uniform jitter has MAD/median
0.125, +-50% 0.25, while connections at random (Poisson) times have about 0.69.

  skew score        1 - |Bowley skew| of the intervals             weight 1
  dispersion score  1 at MAD/median <= 0.1, 0 at >= 0.5, linear     weight 3
  count score       intervals / 16, at most 1                       weight 1

Dispersion carries most weight: it is what separates a timer from chance; Bowley skew is noisy
on a few dozen intervals (it is exactly 0 only for a symmetric jitter). There are no sizes or
durations on either path (a connect() record has none; the kernel sees only the SYN), so
RITA's data-size half is left out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHT_SKEW, WEIGHT_DISPERSION, WEIGHT_COUNT = 1.0, 3.0, 1.0
REGULAR_DISPERSION = 0.1  # MAD/median at or below this: as regular as a timer gets
IRREGULAR_DISPERSION = 0.5  # at or above: no regularity left (Poisson arrivals give ~0.69)
FULL_COUNT = 16  # intervals for the full count score


@dataclass
class Regularity:
    """Per row: intervals counted, their median (the period), MAD (the jitter), skew, score."""

    count: np.ndarray
    period: np.ndarray
    jitter: np.ndarray
    skew: np.ndarray
    score: np.ndarray


def _quantile_sorted(v: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile (linear interpolation) of each row of v, sorted with its n valid values
    first (NaN after them); NaN where a row has none."""
    pos = q * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    a = np.take_along_axis(v, lo[:, None], axis=1)[:, 0]
    b = np.take_along_axis(v, hi[:, None], axis=1)[:, 0]
    out = a + (b - a) * (pos - lo)
    return np.where(n > 0, out, np.nan)


def regularity(intervals: np.ndarray) -> Regularity:
    """Score each row of `intervals` (seconds; NaN = no interval there)."""
    d = np.sort(intervals, axis=1)  # NaN sorts last
    n = np.count_nonzero(~np.isnan(d), axis=1)
    q1 = _quantile_sorted(d, n, 0.25)
    median = _quantile_sorted(d, n, 0.5)
    q3 = _quantile_sorted(d, n, 0.75)
    spread = q3 - q1
    with np.errstate(invalid="ignore", divide="ignore"):
        # Bowley: unreliable when the median sits on a quartile (RITA sets it to 0 there too)
        usable = (spread > 0) & (median > q1) & (median < q3)
        skew = np.where(usable, (q3 + q1 - 2 * median) / np.where(spread > 0, spread, 1), 0.0)
        mad = _quantile_sorted(np.sort(np.abs(d - median[:, None]), axis=1), n, 0.5)
        relative = np.where(median > 0, mad / np.where(median > 0, median, 1), np.inf)
    skew_score = 1.0 - np.minimum(np.abs(skew), 1.0)
    dispersion_score = 1.0 - np.clip((relative - REGULAR_DISPERSION) / (IRREGULAR_DISPERSION - REGULAR_DISPERSION), 0, 1)
    count_score = np.minimum(n / FULL_COUNT, 1.0)
    total = WEIGHT_SKEW + WEIGHT_DISPERSION + WEIGHT_COUNT
    score = (WEIGHT_SKEW * skew_score + WEIGHT_DISPERSION * dispersion_score + WEIGHT_COUNT * count_score) / total
    score = np.where(n > 0, score, 0.0)
    return Regularity(n, np.nan_to_num(median), np.nan_to_num(mad), skew, score)
