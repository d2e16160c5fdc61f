"""Multiple comparisons: Holm (family-wise error) and Benjamini-Hochberg (false discovery rate)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Final

import numpy as np

# adjust() methods; statsmodels' multipletests names are "holm" and "fdr_bh".
_ADJUST_METHODS: Final[tuple[str, ...]] = ("holm", "bh")

# --------------------------------------------------------------------------
# adjust(): multiple comparisons
# --------------------------------------------------------------------------


def adjust(p_values: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """Adjust a family of p-values for multiple comparisons.

    With p_(1) <= ... <= p_(m) the sorted defined p-values:
    ``method="holm"`` (default): Holm (1979), Scand J Stat 6:65, step-down,
    controls the family-wise error rate:
        adj_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)).
    ``method="bh"``: Benjamini & Hochberg (1995), JRSS B 57:289, step-up,
    controls the false discovery rate:
        adj_(i) = min(1, min_{j >= i} m p_(j) / j).
    Identical (same arithmetic, tested to 1e-9) to
    statsmodels.stats.multitest.multipletests(p, method="holm") and
    multipletests(p, method="fdr_bh").  Mind that multipletests' *default* is
    Holm-Sidak ("hs"), so always name the method when calling it.  It is written
    out here because multipletests' "holm" branch calls gc.collect() on every
    call (statsmodels 0.15; unmerged PR #8671), which costs 50-150 ms each in a
    large process - too slow for a report with many families.

    ``None`` entries (undefined tests) are left out of the family - they are
    not counted in m - and come back as ``None`` in the same position.  The
    result has the input's length and order.
    """
    if method not in _ADJUST_METHODS:
        raise ValueError(f"unknown method {method!r}; choose 'holm' or 'bh'")
    defined: list[float] = []
    for p in p_values:
        if p is None:
            continue
        if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p-values must be numbers in [0, 1] or None, got {p!r}")
        defined.append(float(p))
    if not defined:
        return [None] * len(p_values)
    pvals = np.asarray(defined)
    order = np.argsort(pvals)
    ranked = pvals[order]
    m = len(ranked)
    if method == "holm":
        ranked_adjusted = np.maximum.accumulate(ranked * np.arange(m, 0, -1))
    else:
        ranked_adjusted = np.minimum.accumulate((ranked / (np.arange(1, m + 1) / m))[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(ranked_adjusted, 1.0)
    values = iter(adjusted.tolist())
    return [None if p is None else next(values) for p in p_values]
