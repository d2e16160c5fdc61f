"""Server-rendered SVG forest plot: relative lift with its 95% interval per row.

No JavaScript, no CDN: the SVG is part of the page (and of what the tests read). Each
row is a point (the relative lift) with a horizontal line (its interval); the dashed
vertical line is "no difference" (0%). Intervals running past the drawing's range are
cut and end in an arrow. Colours follow the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

__all__ = ["ForestRow", "forest_svg", "nice_ticks"]

WIDTH = 760
LABEL_WIDTH = 300
RIGHT = 20
ROW_HEIGHT = 22
TOP = 14
AXIS = 34
# Relative lift never goes below -100%; above +300% the axis would crush everything else.
DOMAIN_CAP = (-1.0, 3.0)

COLOURS = {
    "significant win": "#1e7e34",
    "significant loss": "#c82333",
    "inconclusive": "#5a6268",
    "not enough data": "#adb5bd",
}


@dataclass(frozen=True, slots=True)
class ForestRow:
    label: str
    estimate: float | None
    low: float | None
    high: float | None
    verdict: str
    why_undefined: str = ""


def nice_ticks(low: float, high: float, target: int = 6) -> list[float]:
    """Round tick values covering [low, high], about ``target`` of them."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _pct(value: float) -> str:
    text = f"{value * 100:+.0f}%" if abs(value) >= 0.1 or value == 0 else f"{value * 100:+.1f}%"
    return text.replace("+0%", "0%").replace("-", "\u2212")


def forest_svg(rows: Sequence[ForestRow], *, title: str) -> SafeString:
    """The forest plot of ``rows`` (top to bottom) as an inline ``<svg>``."""
    values = [v for r in rows for v in (r.low, r.high, r.estimate) if v is not None]
    low = max(min([0.0, *values]), DOMAIN_CAP[0])
    high = min(max([0.0, *values]), DOMAIN_CAP[1])
    if high - low < 0.02:
        low, high = low - 0.01, high + 0.01
    pad = (high - low) * 0.05
    low, high = low - pad, high + pad
    plot_left, plot_right = LABEL_WIDTH, WIDTH - RIGHT
    height = TOP + ROW_HEIGHT * max(len(rows), 1) + AXIS

    def x(value: float) -> float:
        clipped = min(max(value, low), high)
        return round(plot_left + (clipped - low) / (high - low) * (plot_right - plot_left), 2)

    parts = [
        f'<svg class="forest-plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    bottom = TOP + ROW_HEIGHT * max(len(rows), 1)
    for tick in nice_ticks(low, high):
        tx = x(tick)
        parts.append(f'<line x1="{tx}" y1="{TOP}" x2="{tx}" y2="{bottom}" stroke="#e9ecef" />')
        parts.append(
            f'<text x="{tx}" y="{bottom + 16}" font-size="11" text-anchor="middle" fill="#495057">{_pct(tick)}</text>'
        )
    zero = x(0.0)
    parts.append(
        f'<line class="zero" x1="{zero}" y1="{TOP - 6}" x2="{zero}" y2="{bottom}" stroke="#212529" '
        'stroke-dasharray="4 3" />'
    )
    parts.append(
        f'<text x="{(plot_left + plot_right) / 2}" y="{bottom + 30}" font-size="11" text-anchor="middle" '
        'fill="#495057">relative lift vs control (95% interval, not adjusted)</text>'
    )
    for i, row in enumerate(rows):
        y = TOP + ROW_HEIGHT * i + ROW_HEIGHT / 2
        colour = COLOURS.get(row.verdict, COLOURS["not enough data"])
        parts.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 4}" font-size="12" text-anchor="end" fill="#212529">'
            f"{escape(row.label)}</text>"
        )
        if row.estimate is None:
            why = escape(row.why_undefined or "not defined")
            parts.append(
                f'<text class="undefined" x="{plot_left + 4}" y="{y + 4}" font-size="11" fill="#6c757d">'
                f"not defined: {why}</text>"
            )
            continue
        title_text = escape(f"{row.label}: {_pct(row.estimate)} ({row.verdict})")
        parts.append(f'<g class="row" data-verdict="{escape(row.verdict)}"><title>{title_text}</title>')
        if row.low is not None and row.high is not None:
            x1, x2 = x(row.low), x(row.high)
            parts.append(f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" stroke-width="2" />')
            if row.low < low:
                parts.append(f'<path d="M{x1} {y} l6 -4 v8 z" fill="{colour}" />')
            if row.high > high:
                parts.append(f'<path d="M{x2} {y} l-6 -4 v8 z" fill="{colour}" />')
        filled = colour if row.verdict != "not enough data" else "#ffffff"
        parts.append(
            f'<circle cx="{x(row.estimate)}" cy="{y}" r="4.5" fill="{filled}" stroke="{colour}" stroke-width="2" />'
        )
        parts.append("</g>")
    parts.append("</svg>")
    # Every interpolated text above went through escape().
    return mark_safe("".join(parts))
