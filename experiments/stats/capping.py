"""Percentile capping (winsorization) of per-customer values: which value is the cap.

A few very large orders dominate the variance of revenue per customer; capping each
customer's value at the q-th percentile of the experiment's customers (all arms together,
so the cap cannot favour an arm) trades a small bias for a large variance reduction
(Kohavi, Tang & Xu, "Trustworthy Online Controlled Experiments", 2020, ch. 22).

The cap is the *nearest-rank* percentile of the n per-customer values (Hyndman & Fan 1996,
definition 1; numpy.percentile(values, 100 q, method="inverted_cdf")): sort ascending and
take the value at 1-based rank ``ceil(q n)``.  It is always one of the observed values, so
the database finds it with ``ORDER BY value LIMIT 1 OFFSET rank - 1`` on SQLite and
PostgreSQL alike (no interpolation, exact for money).  Values above the cap are replaced by
the cap; values at or below it are unchanged.
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Real

from experiments.stats._common import _check_count


def cap_rank(n: int, percentile: float) -> int | None:
    """1-based rank of the nearest-rank ``percentile`` (0 < q <= 1) among n values; None if n = 0."""
    n = _check_count("n", n)
    if isinstance(percentile, bool) or not isinstance(percentile, Real) or not 0.0 < float(percentile) <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile!r}")
    if n <= 0:
        return None
    # Exact arithmetic: ceil(0.99 * 100) must be 99, not 100 from 99.00000000000001.
    return max(1, math.ceil(Fraction(str(percentile)) * n))
