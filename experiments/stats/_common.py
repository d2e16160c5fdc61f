"""Value types shared by every statistics module: ``Reason``, ``Interval``, ``Arm``,
JSON conversion that refuses NaN, argument checks, normal-distribution helpers and the
verdict labels.  No Django (import-linter contract "Pure computation has no Django").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache
from numbers import Integral, Real
from typing import Any, Final, Literal

from experiments.stats._lazy import lazy_module

# Loaded on first use: see experiments.stats._lazy (not at Django setup).
special = lazy_module("scipy.special")


SRM_THRESHOLD: Final[float] = 0.001

VerdictLabel = Literal["significant win", "significant loss", "inconclusive", "not enough data"]
SIGNIFICANT_WIN: Final = "significant win"
SIGNIFICANT_LOSS: Final = "significant loss"
INCONCLUSIVE: Final = "inconclusive"
NOT_ENOUGH_DATA: Final = "not enough data"


# --------------------------------------------------------------------------
# Small value types and JSON conversion
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a value is undefined, or why something was flagged/noted.

    ``code`` is stable and machine-readable (snake_case); ``message`` is plain
    words for a marketer.
    """

    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Interval:
    """A two-sided confidence interval ``[low, high]`` (finite floats)."""

    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _jsonable(value: Any) -> Any:
    """Dataclasses/tuples/dicts to JSON-ready data; refuses NaN and infinity."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        number = float(value)
        if not math.isfinite(number):  # pragma: no cover - guarded upstream
            raise ValueError(f"non-finite number {number!r} in a result")
        return number
    if isinstance(value, Reason):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _check_probability(name: str, value: float) -> float:
    """A number strictly between 0 and 1 (alpha, power, thresholds)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not 0.0 < number < 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class Arm:
    """Customers (``n``) and how many of them converted in one arm."""

    n: int
    conversions: int

    def __post_init__(self) -> None:
        n = _check_count("n", self.n)
        conversions = _check_count("conversions", self.conversions)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not 0 <= conversions <= n:
            raise ValueError(f"conversions must be between 0 and n={n}, got {conversions}")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "conversions", conversions)

    @property
    def rate(self) -> float | None:
        """conversions / n, or None when the arm has no customers."""
        return self.conversions / self.n if self.n else None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


# --------------------------------------------------------------------------
# Normal distribution helpers (identical to scipy.stats.norm, which statsmodels
# uses: norm.isf(q) == -ndtri(q), norm.sf(x) == ndtr(-x)).
# --------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _z_crit(alpha: float) -> float:
    """Two-sided critical value z_{1-alpha/2} = scipy.stats.norm.isf(alpha / 2)."""
    return float(-special.ndtri(alpha / 2.0))


def _two_sided_p(z: float) -> float:
    """p = 2 * P(Z > |z|) = 2 * scipy.stats.norm.sf(|z|) (statsmodels _zstat_generic2)."""
    return float(2.0 * special.ndtr(-abs(z)))


_IntervalOutcome = Interval | Reason
_NUMERICAL_FAILURE = Reason("numerical_failure", "This number could not be computed reliably for these counts.")


def _finite_or_none(name: str, value: float | None, undefined: dict[str, Reason]) -> float | None:
    if value is None:
        return None
    value = float(value)
    if math.isfinite(value):
        return value
    undefined.setdefault(name, _NUMERICAL_FAILURE)
    return None


def _finite_interval(name: str, value: _IntervalOutcome, undefined: dict[str, Reason]) -> Interval | None:
    if isinstance(value, Reason):
        undefined[name] = value
        return None
    if math.isfinite(value.low) and math.isfinite(value.high):
        return value
    undefined[name] = _NUMERICAL_FAILURE
    return None
