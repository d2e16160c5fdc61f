"""Sufficient statistics of per-customer values and the delta method on them.

A value metric is a function of per-customer *means*: revenue per customer is the mean of
x (each customer's revenue in the window), average order value is mean(revenue) /
mean(orders).  Everything the statistics need from one arm is therefore

    n,  s_i = sum over customers of v_i,  S_ij = sum over customers of v_i v_j

for the k variables v_1..v_k of that metric (k = 1 for a mean, 2 for a ratio or a mean
with its pre-period covariate, 4 for a ratio with CUPED).  The database returns these from
one GROUP BY (``experiments.reports.value``); no per-customer row reaches Python.

Per-customer covariance (ddof = 1, as numpy.cov / scipy's Welch test use)::

    C_ij = (S_ij - s_i s_j / n) / (n - 1)

computed exactly with ``fractions.Fraction`` (money arrives as ``Decimal``; the textbook
S - s^2/n loses every digit to cancellation in floating point when the mean is large
against the spread), then rounded once to float.

Delta method (Casella & Berger, Statistical Inference, 2nd ed., 5.5.4; for metric
analytics: Deng, Knoblich & Lu 2018, "Applying the Delta Method in Metric Analytics", KDD,
section 2): a statistic f of the mean vector m has, to first order,

    Var f(m_hat) = grad f' C grad f / n,     Cov(f, g) = grad f' C grad g / n.

``Statistic`` kinds: ``MeanOf(i)`` (gradient e_i, exact) and ``RatioOf(a, b)`` = m_a / m_b
(gradient e_a / m_b - m_a e_b / m_b^2), which gives the familiar ratio variance
``(C_aa - 2 R C_ab + R^2 C_bb) / (n m_b^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from numbers import Real
from typing import Any

from experiments.stats._common import Reason, _check_count, _jsonable

Number = int | float | Decimal


def _exact(name: str, value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (Real, Decimal)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return Fraction(value)  # type: ignore[arg-type]


def _all_int(sums: Sequence[object], products: Sequence[Sequence[object]]) -> bool:
    return all(type(v) is int for v in sums) and all(type(v) is int for row in products for v in row)


@dataclass(frozen=True, slots=True)
class Moments:
    """n customers; ``sums[i]`` = sum of v_i; ``products[i][j]`` = sum of v_i v_j.

    ``products`` is the full symmetric k x k table.  Values are kept exact (ints,
    Decimals or floats as given); ``covariance`` does the centring exactly.
    """

    n: int
    sums: tuple[Number, ...]
    products: tuple[tuple[Number, ...], ...]
    # Derived once (the report and the simulations ask for the covariance of the same arm
    # several times: each statistic, CUPED); not part of equality.
    _integral: bool = field(default=False, init=False, repr=False, compare=False)
    _covariance: tuple[tuple[float, ...], ...] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = _check_count("n", self.n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        k = len(self.sums)
        if k == 0 or len(self.products) != k or any(len(row) != k for row in self.products):
            raise ValueError("products must be a k x k table for k = len(sums) >= 1")
        if _all_int(self.sums, self.products):
            # Integers (counts, money in hundredths, simulations): no Fraction needed.
            if any(self.products[i][j] != self.products[j][i] for i in range(k) for j in range(i)):
                raise ValueError("products must be symmetric")
            object.__setattr__(self, "_integral", True)
            k = 0
        for i in range(k):
            _exact(f"sums[{i}]", self.sums[i])
            for j in range(k):
                if _exact(f"products[{i}][{j}]", self.products[i][j]) != Fraction(self.products[j][i]):
                    raise ValueError("products must be symmetric")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "sums", tuple(self.sums))
        object.__setattr__(self, "products", tuple(tuple(row) for row in self.products))

    @classmethod
    def single(cls, n: int, sum_x: Number, sum_x2: Number) -> Moments:
        """One variable: n, sum x, sum x^2."""
        return cls(n, (sum_x,), ((sum_x2,),))

    @classmethod
    def pair(cls, n: int, sum_x: Number, sum_x2: Number, sum_y: Number, sum_y2: Number, sum_xy: Number) -> Moments:
        """Two variables: n, sum x, sum x^2, sum y, sum y^2, sum xy (the issue's six numbers)."""
        return cls(n, (sum_x, sum_y), ((sum_x2, sum_xy), (sum_xy, sum_y2)))

    @classmethod
    def of_values(cls, rows: Sequence[Sequence[Number]]) -> Moments:
        """From per-customer rows (tests, simulations; never from the database)."""
        if not rows:
            raise ValueError("of_values needs at least one row (use Moments.empty for none)")
        k = len(rows[0])
        sums = tuple(sum((row[i] for row in rows), 0) for i in range(k))
        products = tuple(tuple(sum((row[i] * row[j] for row in rows), 0) for j in range(k)) for i in range(k))
        return cls(len(rows), sums, products)

    @classmethod
    def empty(cls, k: int) -> Moments:
        return cls(0, (0,) * k, ((0,) * k,) * k)

    @property
    def k(self) -> int:
        return len(self.sums)

    def __add__(self, other: Moments) -> Moments:
        if self.k != other.k:
            raise ValueError("cannot add moments of different variables")
        if self._integral and other._integral:
            return Moments(
                self.n + other.n,
                tuple(a + b for a, b in zip(self.sums, other.sums, strict=True)),  # type: ignore[operator]
                tuple(
                    tuple(a + b for a, b in zip(ra, rb, strict=True))  # type: ignore[operator]
                    for ra, rb in zip(self.products, other.products, strict=True)
                ),
            )
        sums = tuple(_exact("s", a) + _exact("s", b) for a, b in zip(self.sums, other.sums, strict=True))
        products = tuple(
            tuple(_exact("p", a) + _exact("p", b) for a, b in zip(ra, rb, strict=True))
            for ra, rb in zip(self.products, other.products, strict=True)
        )
        return Moments(self.n + other.n, sums, products)  # type: ignore[arg-type]

    def means(self) -> tuple[float, ...] | None:
        """Per-customer means, or None for an empty arm."""
        if self.n == 0:
            return None
        if self._integral:
            return tuple(s / self.n for s in self.sums)  # type: ignore[operator]  # int / int: correctly rounded
        return tuple(float(Fraction(s) / self.n) for s in self.sums)

    def covariance(self) -> tuple[tuple[float, ...], ...] | None:
        """Per-customer covariance matrix (ddof = 1), or None when n < 2."""
        if self.n < 2:
            return None
        if self._covariance is None:
            object.__setattr__(self, "_covariance", self._compute_covariance())
        return self._covariance

    def _compute_covariance(self) -> tuple[tuple[float, ...], ...]:
        n = self.n
        if self._integral:
            # (n S_ij - s_i s_j) / (n (n - 1)): an exact integer ratio, and Python's int / int
            # rounds it correctly once, the same float as the Fraction path (and ~20x faster).
            t = self.sums
            return tuple(
                tuple((n * self.products[i][j] - t[i] * t[j]) / (n * (n - 1)) for j in range(self.k))  # type: ignore[operator]
                for i in range(self.k)
            )
        s = [Fraction(v) for v in self.sums]
        return tuple(
            tuple(float((Fraction(self.products[i][j]) - s[i] * s[j] / self.n) / (self.n - 1)) for j in range(self.k))
            for i in range(self.k)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "sums": [str(v) if isinstance(v, Decimal) else v for v in self.sums],
            "products": [[str(v) if isinstance(v, Decimal) else v for v in row] for row in self.products],
        }


# --------------------------------------------------------------------------
# Statistics of the mean vector: value and gradient (the delta method)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeanOf:
    """The mean of variable ``index`` (revenue per customer, orders per customer, rate)."""

    index: int

    def value(self, means: Sequence[float]) -> float | Reason:
        return means[self.index]

    def gradient(self, means: Sequence[float]) -> tuple[float, ...]:
        return tuple(1.0 if i == self.index else 0.0 for i in range(len(means)))


@dataclass(frozen=True, slots=True)
class RatioOf:
    """mean(v_numerator) / mean(v_denominator), e.g. revenue / orders = average order value."""

    numerator: int
    denominator: int

    def value(self, means: Sequence[float]) -> float | Reason:
        if means[self.denominator] == 0:
            return DENOMINATOR_ZERO
        return means[self.numerator] / means[self.denominator]

    def gradient(self, means: Sequence[float]) -> tuple[float, ...]:
        a, b = means[self.numerator], means[self.denominator]
        grad = [0.0] * len(means)
        grad[self.numerator] += 1.0 / b
        grad[self.denominator] -= a / (b * b)
        return tuple(grad)


Statistic = MeanOf | RatioOf

NO_TRAFFIC = Reason("no_traffic", "An arm has no customers.")
TOO_FEW = Reason("too_few_customers", "An arm has fewer than 2 customers, so its spread cannot be estimated.")
DENOMINATOR_ZERO = Reason(
    "denominator_zero", "The ratio's denominator is 0 in this arm (e.g. no orders), so the ratio is undefined."
)


def quad(u: Sequence[float], cov: Sequence[Sequence[float]], w: Sequence[float]) -> float:
    """u' C w."""
    return math.fsum(u[i] * cov[i][j] * w[j] for i in range(len(u)) for j in range(len(w)))


@dataclass(frozen=True, slots=True)
class Estimate:
    """One arm's value of a statistic with its *per-customer* (linearised) variance.

    ``variance / n`` is the estimator's variance (delta method).  ``None`` fields are
    explained in ``undefined``.

    ``units`` (ratios only, else None): the effective number of customers with a
    denominator, Kish's n_eff = (sum x)^2 / sum x^2 over the denominator x (Kish 1965,
    Survey Sampling, 8.2; = the number of customers with x > 0 when every such x is 1).
    A ratio is a weighted mean of y/x over those customers only (the others' linearised
    value is 0), so its small-sample degrees of freedom come from ``units``, not ``n``
    (``experiments.stats.means``). ``covariates``: regression adjustments estimated from
    the data (1 after CUPED's theta), each costing one degree of freedom there.
    """

    n: int
    value: float | None
    variance: float | None
    undefined: dict[str, Reason]
    units: float | None = None
    covariates: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def estimate(moments: Moments, statistic: Statistic) -> Estimate:
    """The statistic's value in one arm and its linearised per-customer variance."""
    means = moments.means()
    if means is None:
        return Estimate(0, None, None, {"value": NO_TRAFFIC, "variance": NO_TRAFFIC})
    value = statistic.value(means)
    if isinstance(value, Reason):
        return Estimate(moments.n, None, None, {"value": value, "variance": value})
    cov = moments.covariance()
    if cov is None:
        return Estimate(moments.n, value, None, {"variance": TOO_FEW})
    grad = statistic.gradient(means)
    units = denominator_units(moments, statistic.denominator) if isinstance(statistic, RatioOf) else None
    return Estimate(moments.n, value, max(quad(grad, cov, grad), 0.0), {}, units)


def denominator_units(moments: Moments, index: int) -> float:
    """Kish's effective number of units of the weights x = variable ``index``:
    (sum x)^2 / sum x^2 (0 when every x is 0); see ``Estimate.units``."""
    total, squares = moments.sums[index], moments.products[index][index]
    if not squares:
        return 0.0
    if isinstance(total, int) and isinstance(squares, int):
        return total * total / squares  # int / int: correctly rounded
    return float(Fraction(total) ** 2 / Fraction(squares))
