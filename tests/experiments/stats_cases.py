"""Shared table of two-arm cases for the statistics tests.

Covers n = 50 and n = 2,000,000 per arm, zero conversions in one arm, 100%
conversion in one arm, tiny and large effects, 10/90 and 90/10 splits, very low
and very high rates, and the degenerate corners (both arms flat, 0% vs 100%).
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.stats import Arm


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    control: Arm
    treatment: Arm


def _case(case_id: str, control: tuple[int, int], treatment: tuple[int, int]) -> Case:
    """control/treatment as (conversions, n)."""
    return Case(case_id, Arm(control[1], control[0]), Arm(treatment[1], treatment[0]))


CASES: tuple[Case, ...] = (
    _case("n50_typical", (5, 50), (9, 50)),
    _case("n50_zero_in_treatment", (3, 50), (0, 50)),
    _case("n50_zero_in_control", (0, 50), (4, 50)),
    _case("n50_full_in_treatment", (40, 50), (50, 50)),
    _case("n50_full_in_control", (50, 50), (45, 50)),
    _case("n50_large_effect", (2, 50), (30, 50)),
    _case("hand_worked_1000", (100, 1000), (130, 1000)),
    _case("n2m_tiny_effect", (200_000, 2_000_000), (200_400, 2_000_000)),
    _case("n2m_no_effect", (40_000, 2_000_000), (40_000, 2_000_000)),
    _case("n2m_large_effect", (100_000, 2_000_000), (150_000, 2_000_000)),
    _case("n2m_zero_in_control", (0, 2_000_000), (3, 2_000_000)),
    _case("n2m_low_rate_tiny_effect", (2_000, 2_000_000), (2_050, 2_000_000)),
    _case("split_10_90", (50, 1_000), (540, 9_000)),
    _case("split_90_10", (540, 9_000), (50, 1_000)),
    _case("split_10_90_n2m", (20_000, 200_000), (183_000, 1_800_000)),
    _case("tiny_rates", (1, 100_000), (5, 100_000)),
    _case("high_rates", (990, 1_000), (999, 1_000)),
    _case("negative_effect", (300, 2_000), (240, 2_000)),
    # Degenerate corners: some statistics are undefined here.
    _case("both_zero", (0, 50), (0, 50)),
    _case("both_full", (50, 50), (50, 50)),
    _case("zero_vs_full", (0, 50), (50, 50)),
    _case("single_customers", (0, 1), (1, 1)),
)

CASE_IDS: tuple[str, ...] = tuple(case.id for case in CASES)
