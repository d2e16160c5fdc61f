"""bench/scaling.py's growth exponent, against hand-worked cases and numpy's polyfit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.scaling import growth_exponent

pytestmark = pytest.mark.pure


def test_growth_exponent__linear_cost__k_is_1() -> None:
    # 2 s, 4 s, 8 s at 250k, 500k, 1M: doubling the size doubles the time.
    assert growth_exponent([250_000, 500_000, 1_000_000], [2.0, 4.0, 8.0]) == pytest.approx(1.0)


def test_growth_exponent__quadratic_cost__k_is_2() -> None:
    assert growth_exponent([1, 2, 4], [3.0, 12.0, 48.0]) == pytest.approx(2.0)


def test_growth_exponent__noisy_times__matches_numpy_polyfit_on_logs() -> None:
    sizes, seconds = [20_000, 40_000, 80_000], [1.7, 3.1, 7.9]
    expected = np.polyfit(np.log(sizes), np.log(seconds), 1)[0]
    assert growth_exponent(sizes, seconds) == pytest.approx(expected)
    assert math.isfinite(expected)


@pytest.mark.parametrize(
    ("sizes", "seconds"),
    [([1000, 1000, 1000], [1.0, 2.0, 3.0]), ([1000], [1.0]), ([1000, 2000], [0.0, 1.0])],
)
def test_growth_exponent__undefined__none_not_nan(sizes: list[int], seconds: list[float]) -> None:
    assert growth_exponent(sizes, seconds) is None
