"""Numbers in words for the admin pages: rates, lifts, intervals, p-values, verdicts.

Pure formatting (no database). An undefined number is shown as "not defined" with its
reason, never as a blank, NaN or infinity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from experiments.stats import Interval, Reason

__all__ = ["Shown", "interval_pct", "interval_points", "p_value", "pct", "points", "rate", "shown", "verdict_css"]

MINUS = "\u2212"


@dataclass(frozen=True, slots=True)
class Shown:
    """A formatted value; ``undefined`` holds the reason when there is no number."""

    text: str
    undefined: str = ""

    def __str__(self) -> str:
        return self.text


def _undefined(undefined: Mapping[str, Reason], name: str) -> Shown:
    reason = undefined.get(name)
    return Shown("not defined", reason.message if reason else "This value is not available.")


def _signed(value: float, decimals: int) -> str:
    text = f"{abs(value):.{decimals}f}"
    if float(text) == 0:
        return text
    return ("+" if value > 0 else MINUS) + text


def rate(value: float | None, undefined: Mapping[str, Reason], name: str = "rate") -> Shown:
    """0.1234 -> '12.34%'."""
    return _undefined(undefined, name) if value is None else Shown(f"{value:.2%}")


def points(value: float | None, undefined: Mapping[str, Reason], name: str) -> Shown:
    """Absolute lift in percentage points: 0.012 -> '+1.20 pts'."""
    return _undefined(undefined, name) if value is None else Shown(f"{_signed(value * 100, 2)} pts")


def amount(value: float | None, undefined: Mapping[str, Reason], name: str, signed: bool = False) -> Shown:
    """A value metric's number (money or count per customer, a ratio): 5.4 -> '5.40' ('+5.40')."""
    if value is None:
        return _undefined(undefined, name)
    return Shown(_signed(value, 2) if signed else f"{value:,.2f}")


def interval_amount(ci: Interval | None, undefined: Mapping[str, Reason], name: str) -> Shown:
    if ci is None:
        return _undefined(undefined, name)
    return Shown(f"{_signed(ci.low, 2)} to {_signed(ci.high, 2)}")


def pct(value: float | None, undefined: Mapping[str, Reason], name: str) -> Shown:
    """Relative lift: 0.12 -> '+12.0%'."""
    return _undefined(undefined, name) if value is None else Shown(f"{_signed(value * 100, 1)}%")


def interval_points(ci: Interval | None, undefined: Mapping[str, Reason], name: str) -> Shown:
    if ci is None:
        return _undefined(undefined, name)
    return Shown(f"{_signed(ci.low * 100, 2)} to {_signed(ci.high * 100, 2)} pts")


def interval_pct(ci: Interval | None, undefined: Mapping[str, Reason], name: str) -> Shown:
    if ci is None:
        return _undefined(undefined, name)
    return Shown(f"{_signed(ci.low * 100, 1)}% to {_signed(ci.high * 100, 1)}%")


def p_value(value: float | None, undefined: Mapping[str, Reason], name: str) -> Shown:
    """Three significant digits; below 0.0001 as '< 0.0001'."""
    if value is None:
        return _undefined(undefined, name)
    if value < 1e-4:
        return Shown("< 0.0001")
    return Shown(f"{value:.3g}" if value < 0.1 else f"{value:.2f}")


def shown(value: float | int | None, undefined: Mapping[str, Reason], name: str, fmt: str = "{:,}") -> Shown:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return _undefined(undefined, name)
    return Shown(fmt.format(value))


def verdict_css(label: str) -> str:
    return {
        "significant win": "verdict-win",
        "significant loss": "verdict-loss",
        "inconclusive": "verdict-inconclusive",
    }.get(label, "verdict-nodata")
