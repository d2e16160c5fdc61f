"""Query-string parameters → analytics specs, shared by the API and the admin pages.

One parser, so a URL means the same numbers in the API, the CSV and the admin page. Every
bad value raises :class:`AnalyticsInputError` naming its parameter.

Funnel steps are written ``event`` or ``event[key=value]`` (several brackets: all must
match), comma-separated: ``visit,visit[page=product],add_to_cart,order``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from segments.analytics.errors import AnalyticsInputError
from segments.analytics.funnels import PRESETS, FunnelSpec, FunnelStep
from segments.analytics.retention import RetentionSpec

STEP = re.compile(r"^(?P<event>[A-Za-z0-9_-]+)(?P<filters>(\[[A-Za-z0-9_]+=[^\[\]]*\])*)$")
FILTER = re.compile(r"\[([A-Za-z0-9_]+)=([^\[\]]*)\]")


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = params.get(name) or default
    if value not in choices:
        raise AnalyticsInputError(name, f"Choose one of: {', '.join(choices)}.")
    return value


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AnalyticsInputError(name, "Give a whole number.") from None
    if not low <= value <= high:
        raise AnalyticsInputError(name, f"Between {low} and {high}.")
    return value


# Far enough for any real data, and far from the calendar's ends (date arithmetic overflows).
EARLIEST, LATEST = dt.date(1970, 1, 1), dt.date(2999, 12, 31)


def _in_range(name: str, day: dt.date) -> None:
    if not EARLIEST <= day <= LATEST:
        raise AnalyticsInputError(name, f"Between {EARLIEST} and {LATEST}.")


def _date(params: Mapping[str, str], name: str) -> dt.date | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        value = dt.date.fromisoformat(raw)
    except ValueError:
        raise AnalyticsInputError(name, "Use YYYY-MM-DD.") from None
    _in_range(name, value)
    return value


def _instant(params: Mapping[str, str], name: str) -> dt.datetime | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        if " " in raw.strip():
            # `?start=2026-01-31T00:00:00+00:00` typed into curl: the query string's '+' is a space.
            raise AnalyticsInputError(
                name, f"'{raw}' has a space where the offset's '+' was: write + as %2B in a URL (or use Z)."
            ) from None
        raise AnalyticsInputError(name, "Use ISO 8601 with an offset, e.g. 2026-01-31T00:00:00+00:00.") from None
    if value.tzinfo is None:
        raise AnalyticsInputError(name, "Give a time zone offset, e.g. +00:00.")
    _in_range(name, value.astimezone(dt.UTC).date())
    return value


def _not_future(params: Mapping[str, str], name: str) -> dt.datetime | None:
    """An instant the table is computed *at*: a later one would count the days still to
    come as over, and every customer who has not had them yet as not retained."""
    value = _instant(params, name)
    if value is not None and value > dt.datetime.now(dt.UTC):
        raise AnalyticsInputError(name, "Must not be in the future: the days after now have no events yet.")
    return value


def _codes(raw: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in (raw or "").split(",") if c.strip())


def retention_spec(params: Mapping[str, str]) -> RetentionSpec:
    return RetentionSpec(
        anchor=_choice(params, "anchor", ("signup", "first_purchase"), "signup"),  # type: ignore[arg-type]
        cohort_grain=_choice(params, "cohort", ("day", "week", "month"), "week"),  # type: ignore[arg-type]
        period=_choice(params, "period", ("day", "week"), "day"),  # type: ignore[arg-type]
        periods=_int(params, "periods", 30, 0, 400),
        return_events=_codes(params.get("return_events")),
        purchase_event=params.get("purchase_event") or "order",
        cohort_from=_date(params, "cohort_from"),
        cohort_to=_date(params, "cohort_to"),
        as_of=_not_future(params, "as_of"),
        breakdown=params.get("breakdown") or None,
    )


def _literal(raw: str) -> Any:
    """``true``/``false`` and numbers compare as their text anyway; kept as text."""
    return raw


def parse_steps(raw: str) -> tuple[FunnelStep, ...]:
    steps = []
    for index, item in enumerate(part.strip() for part in raw.split(",")):
        match = STEP.match(item)
        if not match:
            raise AnalyticsInputError("steps", f"Step {index + 1} ('{item}'): write event or event[key=value].")
        where = {k: _literal(v) for k, v in FILTER.findall(match.group("filters"))}
        # Labelled as written: `visit,visit[page=product]` would otherwise show two steps
        # both called "visit" on the page, in the CSV and in the JSON (which has no filters).
        steps.append(FunnelStep(match.group("event"), where, label=item))
    return tuple(steps)


def funnel_spec(params: Mapping[str, str]) -> FunnelSpec:
    preset = params.get("preset") or ""
    if preset:
        if preset not in PRESETS:
            raise AnalyticsInputError("preset", f"Choose one of: {', '.join(PRESETS)}.")
        base = PRESETS[preset]
    elif params.get("steps"):
        base = FunnelSpec(steps=parse_steps(params["steps"]))
    else:
        raise AnalyticsInputError("steps", "Give steps (e.g. visit,add_to_cart,order) or a preset.")
    if preset and params.get("steps"):
        raise AnalyticsInputError("steps", "Give steps or a preset, not both.")
    return replace(
        base,
        window_seconds=_int(params, "window_seconds", base.window_seconds, 1, 366 * 86400),
        order=_choice(params, "order", ("strict", "any"), base.order),  # type: ignore[arg-type]
        start=_instant(params, "start"),
        end=_instant(params, "end"),
        breakdown=params.get("breakdown") or None,
    )


def flows_args(params: Mapping[str, str]) -> dict[str, Any]:
    return {
        "dimension": params.get("dimension") or "rfm",
        "grain": _choice(params, "grain", ("day", "week", "month"), "week"),
        "start": _date(params, "start"),
        "end": _date(params, "end"),
    }


def lifecycle_args(params: Mapping[str, str]) -> dict[str, Any]:
    return {
        "grain": _choice(params, "grain", ("day", "week", "month"), "week"),
        "start": _date(params, "start"),
        "end": _date(params, "end"),
        "events": _codes(params.get("events")),
    }
