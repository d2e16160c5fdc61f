"""Power for value metrics (means and ratios), with CUPED's variance.

The difference of two means (or ratios, by the delta method) is approximately normal with
variance sigma^2 (1/n_c + 1/n_t), sigma^2 the per-customer (linearised) variance.  With
CUPED the variance is sigma^2 (1 - R), R the variance reduction achieved (Deng et al. 2013,
section 3.2: 1 - rho^2).  The standardised effect is

    d = baseline x relative_mde / sqrt(sigma^2 (1 - R))

and the control arm needs the n_c solving statsmodels' NormalIndPower power equation
(power = Phi(d sqrt(m) - c) + Phi(-d sqrt(m) - c), m = n_c ratio / (1 + ratio)); the
textbook n_c = (1 + 1/ratio) ((z_{1-alpha/2} + z_power) / d)^2 without the far tail
(Cohen 1988, ch. 2; Kohavi et al. 2020, ch. 17: n = 16 sigma^2 / delta^2 per arm at 80%).

``sequential=True``: the always-valid test (``experiments.stats.sequential``) rejects at a
look when |estimate| > k se, k = sqrt(n) c(n) the normal-mixture half-width in se units
(n = n_c + n_t, rho tuned at n itself: the plan's horizon is the requirement), so

    power(n_c) = Phi(|delta| / se - k) + Phi(-|delta| / se - k),
    se = sqrt(sigma^2 (1 - R) (1/n_c + 1/n_t)),  n_t = ratio n_c,

solved for n_c by Brent's method, as ``power.sequential_sample_size`` does for rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from experiments.stats._common import Reason, _check_probability, _jsonable
from experiments.stats._lazy import lazy_module
from experiments.stats.power import _sequential_boundary_factor, _sequential_rho, _solve_nobs1

# Loaded on first use: see experiments.stats._lazy (not at Django setup).
optimize = lazy_module("scipy.optimize")
special = lazy_module("scipy.special")


@dataclass(frozen=True, slots=True)
class ValueSampleSize:
    """Customers per arm to detect ``relative_mde`` on a mean or ratio metric."""

    baseline: float
    variance: float
    relative_mde: float
    alpha: float
    power: float
    ratio: float
    variance_reduction: float
    effect_size: float | None
    required_control: int | None
    required_treatment: int | None
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def value_sample_size(
    baseline: float,
    variance: float,
    relative_mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    variance_reduction: float = 0.0,
    sequential: bool = False,
) -> ValueSampleSize:
    """Sample size for a value metric (module docstring); ``sequential``: for the
    always-valid test instead of the fixed-horizon one.

    ``baseline``: the control's mean (or ratio); ``variance``: its per-customer variance
    (``Estimate.variance``); ``variance_reduction``: CUPED's R in [0, 1) (0 = off).
    """
    alpha = _check_probability("alpha", alpha)
    power = _check_probability("power", power)
    if power <= alpha:
        raise ValueError("power must be larger than alpha")
    base, var, mde = _finite("baseline", baseline), _finite("variance", variance), _finite("relative_mde", relative_mde)
    ratio = _finite("ratio", ratio)
    reduction = _finite("variance_reduction", variance_reduction)
    if ratio <= 0:
        raise ValueError(f"ratio must be positive, got {ratio!r}")
    if not 0.0 <= reduction < 1.0:
        raise ValueError(f"variance_reduction must be in [0, 1), got {variance_reduction!r}")
    if var < 0:
        raise ValueError(f"variance must be >= 0, got {variance!r}")
    reason: Reason | None = None
    if base * mde == 0.0:
        reason = Reason(
            "mde_zero", "The effect to detect is 0 (a 0% MDE or a baseline of 0), so it can never be detected."
        )
    elif var == 0.0:
        reason = Reason("zero_variance", "The metric does not vary between customers, so power cannot be planned.")
    if reason is not None:
        undefined = {name: reason for name in ("effect_size", "required_control", "required_treatment")}
        return ValueSampleSize(base, var, mde, alpha, power, ratio, reduction, None, None, None, undefined)
    d = abs(base * mde) / math.sqrt(var * (1.0 - reduction))
    n1 = _solve_nobs1(d, alpha, power, ratio)
    if sequential:
        n1 = _sequential_nobs1(d, alpha, power, ratio, start=n1)
    return ValueSampleSize(base, var, mde, alpha, power, ratio, reduction, d, math.ceil(n1), math.ceil(n1 * ratio))


def _sequential_power(d: float, n_control: float, alpha: float, ratio: float) -> float:
    """Power of the always-valid test at this look; d = |delta| / sigma_adjusted."""
    n = n_control * (1.0 + ratio)
    shift = d / math.sqrt(1.0 / n_control + 1.0 / (ratio * n_control))
    k = _sequential_boundary_factor(n, alpha, _sequential_rho(alpha, n))
    return float(special.ndtr(shift - k) + special.ndtr(-shift - k))


def _sequential_nobs1(d: float, alpha: float, power: float, ratio: float, *, start: float) -> float:
    """n_c where the always-valid test reaches ``power`` (it needs more than the fixed
    test's ``start``); Brent's method on log n_c, as ``power.sequential_sample_size``."""

    def excess(log_nc: float) -> float:
        return _sequential_power(d, math.exp(log_nc), alpha, ratio) - power

    low = math.log(max(start, 2.0))
    high = math.log(start * 50.0 + 10.0)
    while excess(high) < 0 and high < 60:
        high += 2.0
    if excess(low) >= 0:
        return math.exp(low)
    return math.exp(optimize.brentq(excess, low, high, xtol=1e-12))
