"""The analytics tables as JSON and CSV (the API, the admin downloads), and their OpenAPI schema.

JSON is the frozen result dataclasses as they are (``dataclasses.asdict``): undefined
numbers are ``null`` next to a ``reason``, never NaN. CSV is one line per cell (retention)
or per step (funnels), overall rows with an empty ``layer`` / ``group``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import types
import typing
from typing import Any, get_args, get_origin, get_type_hints

from django.core.serializers.json import DjangoJSONEncoder

from segments.analytics.flows import LayerFlows, LifecycleCounts
from segments.analytics.funnels import FunnelResult
from segments.analytics.retention import RetentionTable


def to_json(result: RetentionTable | FunnelResult | LayerFlows | LifecycleCounts) -> str:
    return json.dumps(dataclasses.asdict(result), cls=DjangoJSONEncoder)


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return out.getvalue()


def retention_csv(table: RetentionTable) -> str:
    header = [
        "layer",
        "cohort",
        "size",
        "period",
        "retained",
        "rate",
        "retained_on_or_after",
        "rate_on_or_after",
        "reason",
    ]
    missing = "(none)" if (table.breakdown or "").startswith("attribute:") else "(not layered)"
    groups = [("", table.cohorts), *((g.layer or missing, g.cohorts) for g in table.by_layer)]
    rows = [
        [
            layer,
            c.cohort.isoformat(),
            c.size,
            cell.period,
            cell.retained,
            cell.rate,
            cell.retained_on_or_after,
            cell.rate_on_or_after,
            cell.reason,
        ]
        for layer, cohorts in groups
        for c in cohorts
        for cell in c.cells
    ]
    return _csv(header, rows)


def funnel_csv(result: FunnelResult) -> str:
    header = [
        "group",
        "step",
        "label",
        "event",
        "reached",
        "conversion_from_previous",
        "conversion_overall",
        "median_seconds_from_previous",
        "reason",
    ]
    groups = [("", result.steps), *((g.group or "(none)", g.steps) for g in result.groups)]
    rows = [
        [
            group,
            s.step,
            s.label,
            s.event,
            s.reached,
            s.conversion_from_previous,
            s.conversion_overall,
            s.median_seconds_from_previous,
            s.reason,
        ]
        for group, steps in groups
        for s in steps
    ]
    return _csv(header, rows)


def flows_csv(flows: LayerFlows) -> str:
    rows = [[m.period.isoformat(), m.from_layer, m.to_layer, m.customers] for m in flows.moves]
    return _csv(["period", "from_layer", "to_layer", "customers"], rows)


def lifecycle_csv(counts: LifecycleCounts) -> str:
    rows = [
        [p.period.isoformat(), p.new, p.returning, p.resurrecting, p.dormant, str(p.complete).lower()]
        for p in counts.periods
    ]
    return _csv(["period", "new", "returning", "resurrecting", "dormant", "complete"], rows)


def _type_schema(hint: Any) -> dict[str, Any]:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return {**_type_schema(args[0]), "nullable": True}
    if origin in (tuple, list):
        args = [a for a in get_args(hint) if a is not Ellipsis]
        return {"type": "array", "items": _type_schema(args[0]) if args else {}}
    if origin is dict or hint is dict:
        return {"type": "object"}
    if dataclasses.is_dataclass(hint):
        return dataclass_schema(hint)  # type: ignore[arg-type]
    simple = {
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        float: {"type": "number"},
        str: {"type": "string"},
        dt.datetime: {"type": "string", "format": "date-time"},
        dt.date: {"type": "string", "format": "date"},
    }
    return dict(simple.get(hint, {"type": "string"}))


def dataclass_schema(cls: type) -> dict[str, Any]:
    """OpenAPI schema of a result dataclass from its type hints (Literal aliases are strings).

    A small sibling of ``experiments.reports.api.dataclass_schema``: segments may not import
    experiments (the layers contract), and these results need only the simple cases.
    """
    hints = get_type_hints(cls)
    properties = {f.name: _type_schema(hints[f.name]) for f in dataclasses.fields(cls)}
    return {"type": "object", "properties": properties, "required": list(properties)}


def from_json(cls: type[Any], data: Any) -> Any:
    """A result dataclass back from its JSON (``to_json``'s inverse, by the type hints): the
    admin pages render a run's stored result with the same code as a table computed on the
    request. Instants come back at the millisecond the JSON keeps.

    Hand-written rather than dacite or pydantic's ``TypeAdapter`` (neither is a dependency):
    the result types use only dataclasses, tuples, optionals, literals, dates and numbers,
    about twenty lines; the admin tests render a stored result and compare it with the
    table computed on the request."""
    return _from_json(cls, data)


def _from_json(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _from_json(next(a for a in get_args(hint) if a is not type(None)), value)
    if origin in (tuple, list):
        item = get_args(hint)[0]
        return origin(_from_json(item, v) for v in value)
    if origin is typing.Literal or hint in (str, int, bool, Any) or origin is dict or hint is dict:
        return value
    if hint is float:
        return float(value)
    if hint is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if hint is dt.date:
        return dt.date.fromisoformat(value)
    if dataclasses.is_dataclass(hint):
        hints = get_type_hints(hint)
        return hint(**{f.name: _from_json(hints[f.name], value[f.name]) for f in dataclasses.fields(hint) if f.init})
    return value
