"""GET /api/v1/experiments/{key}/report - the lift report as JSON.

Scope ``reports:read``. 404 for an unknown experiment key; 400 (naming ``adjustment``)
for an unknown adjustment method. The body is exactly the JSON export of the admin page
(``experiments.reports.exports.report_json``); its OpenAPI schema is derived from the
report dataclasses (:func:`dataclass_schema`), so the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

from django.http import HttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView

from access.models import Scope
from config.replica import replica_reads
from experiments.reports.assemble import ADJUSTMENTS, ExperimentNotFound, report_build
from experiments.reports.exports import report_json
from experiments.reports.results import Report

__all__ = ["BOOLEANS", "ExperimentReportView", "dataclass_schema", "urlpatterns"]

BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _type_schema(hint: Any, seen: set[type]) -> dict[str, Any]:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        schema = _type_schema(args[0], seen) if len(args) == 1 else {"oneOf": [_type_schema(a, seen) for a in args]}
        return {**schema, "nullable": True}
    if origin is Literal:
        return {"type": "string", "enum": list(get_args(hint))}
    if origin in (tuple, list):
        args = [a for a in get_args(hint) if a is not Ellipsis]
        return {"type": "array", "items": _type_schema(args[0], seen) if args else {}}
    if origin in (dict, typing.Mapping) or hint is dict:
        args = get_args(hint)
        return {"type": "object", "additionalProperties": _type_schema(args[1], seen) if args else {}}
    if is_dataclass(hint):
        return dataclass_schema(hint, seen)
    simple = {
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        float: {"type": "number"},
        str: {"type": "string"},
        dt.datetime: {"type": "string", "format": "date-time"},
        dt.date: {"type": "string", "format": "date"},
    }
    return dict(simple.get(hint, {}))


def dataclass_schema(cls: type, seen: set[type] | None = None) -> dict[str, Any]:
    """OpenAPI schema of a (frozen) dataclass from its type hints, recursively."""
    seen = set() if seen is None else seen
    hints = get_type_hints(cls)
    properties = {f.name: _type_schema(hints[f.name], seen | {cls}) for f in fields(cls)}
    doc = (cls.__doc__ or "").strip()
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": list(properties)}
    if doc and not doc.startswith(cls.__name__ + "("):
        schema["description"] = " ".join(doc.split())
    return schema


class ExperimentReportView(APIView):
    required_scope = Scope.REPORTS_READ

    @extend_schema(
        operation_id="experiment_report",
        summary="An experiment's lift report",
        description=(
            "Scope `reports:read`. The lift report of the experiment's current phase, the same JSON as the admin "
            "page's JSON export: per metric (primary, secondary, guardrails) an overall row and one row per layer "
            "of each dimension of the assignment-time snapshot, with customers, conversions and rate per variant, "
            "absolute and relative lift with 95% intervals, p-value, adjusted p-value (family named in "
            "`overall_family` / `dimensions[].family`), a plain-words verdict, the sample-ratio check, the power "
            "status, and the heterogeneity test per dimension. An undefined number is `null` and its reason is in "
            "the enclosing object's `undefined` map; there is never NaN or infinity."
        ),
        parameters=[
            OpenApiParameter(
                "adjustment",
                OpenApiTypes.STR,
                enum=list(ADJUSTMENTS),
                default="holm",
                description=(
                    "Multiple-comparison adjustment of the exploratory families: `holm` or `bh` "
                    "(Benjamini-Hochberg); default: the plan's correction. The confirmatory family (the one "
                    "that decides, `confirmatory_family`) always uses the plan's correction."
                ),
            ),
            OpenApiParameter(
                "timeseries",
                OpenApiTypes.BOOL,
                default=False,
                description=(
                    "Include the conversion-over-time series (cumulative conversion rate per variant per day). "
                    "It costs one more pass over the experiment's assignments, so it is off by default."
                ),
            ),
            OpenApiParameter(
                "exclude_open_windows",
                OpenApiTypes.BOOL,
                default=True,
                description=(
                    "Count, per metric, only customers whose window after first exposure has closed (default "
                    "true; the number left out is `metrics[].metric.open_window_customers`). `false` counts "
                    "everyone exposed so far, converted or not yet."
                ),
            ),
        ],
        responses={
            200: OpenApiResponse(response=dataclass_schema(Report), description="The report."),
            400: OpenApiResponse(
                description="Unknown adjustment method or a non-boolean flag (errors name the parameter)."
            ),
            404: OpenApiResponse(description="No experiment with this key."),
        },
        tags=["reports"],
    )
    @replica_reads()  # reading work: the replica when fresh (config/replica.py)
    def get(self, request: Request, key: str) -> HttpResponse:
        adjustment = request.query_params.get("adjustment")  # None: the plan's correction
        if adjustment is not None and adjustment not in ADJUSTMENTS:
            raise ValidationError({"adjustment": [f"Choose one of: {', '.join(ADJUSTMENTS)}."]})
        timeseries = request.query_params.get("timeseries", "false").lower()
        if timeseries not in BOOLEANS:
            raise ValidationError({"timeseries": ["Use true or false."]})
        exclude = request.query_params.get("exclude_open_windows")
        if exclude is not None and exclude.lower() not in BOOLEANS:
            raise ValidationError({"exclude_open_windows": ["Use true or false."]})
        try:
            report = report_build(
                experiment_key=key,
                adjustment=adjustment,
                timeseries=BOOLEANS[timeseries],
                exclude_open_windows=None if exclude is None else BOOLEANS[exclude.lower()],
            )
        except ExperimentNotFound:
            raise NotFound(f"No experiment with key '{key}'.") from None
        # Serialised once, by the export (the admin's JSON download is byte-for-byte the same shape).
        return HttpResponse(report_json(report), content_type="application/json")


urlpatterns = [
    path("experiments/<slug:key>/report", ExperimentReportView.as_view(), name="experiment-report"),
]
