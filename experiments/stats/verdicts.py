"""Plain-words verdicts from a comparison and its adjusted p-value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from experiments.stats._common import (
    INCONCLUSIVE,
    NOT_ENOUGH_DATA,
    SIGNIFICANT_LOSS,
    SIGNIFICANT_WIN,
    VerdictLabel,
    _check_probability,
    _jsonable,
)
from experiments.stats.proportions import Comparison

# --------------------------------------------------------------------------
# verdict()
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """Plain-words verdict.  ``label`` is one of the four VerdictLabel strings;
    ``reason`` is a machine-readable code; ``message`` is for the marketer."""

    label: VerdictLabel
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def verdict(
    comparison: Comparison,
    adjusted_p: float | None,
    alpha: float = 0.05,
    min_n_per_arm: int = 100,
    min_expected: float = 5.0,
) -> Verdict:
    """Turn a comparison and its adjusted p-value into a plain-words verdict.

    "not enough data" when any of (checked in this order; ``reason``):
      * an arm has fewer than ``min_n_per_arm`` customers (``arm_below_min_n``);
      * the test is undefined: ``comparison.p_value`` or ``adjusted_p`` is None
        (``test_undefined``);
      * for the normal-approximation methods (all but "fisher"), either arm's
        expected conversions or non-conversions under "no difference"
        (pooled rate x n, (1 - pooled rate) x n) is below ``min_expected``
        (Cochran's rule of 5; ``too_few_conversions``).
    Otherwise "significant win" / "significant loss" when adjusted_p < alpha and
    the absolute lift is > 0 / < 0 (higher conversion is assumed better), else
    "inconclusive".  Only ``adjusted_p`` decides significance.
    """
    alpha = _check_probability("alpha", alpha)
    control, treatment = comparison.control, comparison.treatment
    smallest = min(control.n, treatment.n)
    if smallest < min_n_per_arm:
        return Verdict(
            NOT_ENOUGH_DATA,
            "arm_below_min_n",
            f"Not enough data yet: an arm has {smallest:,} customers; at least "
            f"{min_n_per_arm:,} per arm are needed before we call a result.",
        )
    if comparison.p_value is None or adjusted_p is None:
        why = comparison.undefined.get("p_value")
        return Verdict(
            NOT_ENOUGH_DATA,
            "test_undefined",
            "Not enough data to test: " + (why.message if why else "the p-value is not available."),
        )
    # Cochran's rule is about counts of a binary outcome; value metrics (``ValueComparison``)
    # have no method and rely on the minimum customers per arm above.
    if getattr(comparison, "method", "fisher") != "fisher":
        pooled = (control.conversions + treatment.conversions) / (control.n + treatment.n)
        expected = min(min(pooled, 1.0 - pooled) * control.n, min(pooled, 1.0 - pooled) * treatment.n)
        if expected < min_expected:
            return Verdict(
                NOT_ENOUGH_DATA,
                "too_few_conversions",
                "Not enough data yet: there are too few conversions (or too few non-conversions) for a reliable test.",
            )
    diff = comparison.absolute_lift
    if adjusted_p < alpha and diff is not None and diff != 0:
        if diff > 0:
            return Verdict(
                SIGNIFICANT_WIN,
                "adjusted_p_below_alpha",
                "Significant win: the treatment converts better, and the difference is "
                f"larger than chance explains (adjusted p = {adjusted_p:.3g} < {alpha:g}).",
            )
        return Verdict(
            SIGNIFICANT_LOSS,
            "adjusted_p_below_alpha",
            "Significant loss: the treatment converts worse, and the difference is "
            f"larger than chance explains (adjusted p = {adjusted_p:.3g} < {alpha:g}).",
        )
    return Verdict(
        INCONCLUSIVE,
        "adjusted_p_not_below_alpha",
        "Inconclusive: the difference could be chance "
        f"(adjusted p = {adjusted_p:.3g}, needs < {alpha:g}). There may be no effect, "
        "or one too small to see with this much data.",
    )
