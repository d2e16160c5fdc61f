"""Sample-ratio mismatch (SRM): was traffic split between the arms as configured?"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from experiments.stats._common import SRM_THRESHOLD, Reason, _check_count, _check_probability, _jsonable
from experiments.stats._lazy import lazy_module

# Loaded on first use: see experiments.stats._lazy (not at Django setup).
special = lazy_module("scipy.special")

# --------------------------------------------------------------------------
# srm(): sample ratio mismatch
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SrmResult:
    """Sample-ratio-mismatch check.

    expected: expected customers per arm (0 for zero-weight arms);
    statistic/df/p_value: chi-square goodness of fit over the positive-weight
    arms; flagged: True when p_value < threshold or an arm with weight 0 has
    customers (``flags`` lists why).
    """

    observed: tuple[int, ...]
    weights: tuple[float, ...]
    expected: tuple[float, ...]
    statistic: float | None
    df: int | None
    p_value: float | None
    threshold: float
    flagged: bool
    flags: tuple[Reason, ...]
    message: str
    notes: tuple[Reason, ...] = ()
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def srm(
    observed_counts: Sequence[int],
    weights: Sequence[float],
    threshold: float = SRM_THRESHOLD,
) -> SrmResult:
    """Chi-square goodness-of-fit of observed arm sizes against configured weights.

    expected_i = N w_i / sum(w) over arms with w_i > 0, N = their total;
    X^2 = sum (o_i - e_i)^2 / e_i, df = k - 1, p = P(chi2_df > X^2)
    (scipy.stats.chisquare(observed, expected)); flagged at p < 0.001.
    Zero-weight arms: customers in one is itself a mismatch (flagged, reason
    ``traffic_in_zero_weight_arm``); zero-weight arms are never part of the
    chi-square test.  Fewer than two positive-weight arms
    (``fewer_than_two_arms``) or no customers in them (``no_traffic``) leave
    the test undefined.
    """
    observed = tuple(_check_count("observed count", o) for o in observed_counts)
    if any(o < 0 for o in observed):
        raise ValueError("observed counts must be >= 0")
    if len(observed) != len(weights):
        raise ValueError("observed_counts and weights must have the same length")
    w = tuple(float(x) for x in weights)
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise ValueError("weights must be finite and >= 0")
    threshold = _check_probability("threshold", threshold)

    positive = [i for i, x in enumerate(w) if x > 0]
    total = sum(observed[i] for i in positive)
    weight_sum = sum(w[i] for i in positive)
    expected = tuple(total * x / weight_sum if x > 0 else 0.0 for x in w)

    flags: list[Reason] = []
    leaked = [i for i, x in enumerate(w) if x == 0 and observed[i] > 0]
    if leaked:
        flags.append(
            Reason(
                "traffic_in_zero_weight_arm",
                f"{sum(observed[i] for i in leaked):,} customers landed in arm(s) "
                f"{', '.join(str(i) for i in leaked)} configured to get no traffic.",
            )
        )

    undefined: dict[str, Reason] = {}
    notes: list[Reason] = []
    statistic: float | None = None
    p_value: float | None = None
    df: int | None = None
    if len(positive) < 2:
        undefined_reason = Reason("fewer_than_two_arms", "Fewer than two arms are configured to get traffic.")
    elif total == 0:
        undefined_reason = Reason("no_traffic", "No customers have been assigned yet.")
    else:
        undefined_reason = None
        obs = [observed[i] for i in positive]
        exp = [expected[i] for i in positive]
        statistic = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True))
        df = len(positive) - 1
        p_value = float(special.chdtrc(df, statistic))
        if min(exp) < 5:
            notes.append(
                Reason(
                    "small_expected_counts",
                    "Very little traffic so far; this check becomes reliable with more.",
                )
            )
        if p_value < threshold:
            flags.append(
                Reason(
                    "split_mismatch",
                    f"Traffic split is off from the configured weights by more than chance "
                    f"explains (p = {p_value:.2g} < {threshold:g}).",
                )
            )
    if undefined_reason is not None:
        for name in ("statistic", "df", "p_value"):
            undefined[name] = undefined_reason

    flagged = bool(flags)
    if flagged:
        message = (
            "Sample ratio mismatch: "
            + " ".join(f.message for f in flags)
            + (" Check assignment and tracking before trusting results.")
        )
    elif undefined_reason is not None:
        message = "Sample ratio check not possible: " + undefined_reason.message
    else:
        message = "Traffic split matches the configured weights."
    return SrmResult(
        observed=observed,
        weights=w,
        expected=expected,
        statistic=statistic,
        df=df,
        p_value=p_value,
        threshold=threshold,
        flagged=flagged,
        flags=tuple(flags),
        message=message,
        notes=tuple(notes),
        undefined=undefined,
    )
