"""Read-only growth analytics: retention cohorts and step funnels, as JSON or CSV.

Scope ``reports:read``. Parameters are the query string (``segments.analytics.query``);
a bad one is a 400 in the API's one error shape naming it. The numbers are computed by SQL
in the database on each request (no cache): the definitions are in the README's "Growth
analytics" section.

- ``GET /api/v1/analytics/retention`` and ``.../retention.csv``
- ``GET /api/v1/analytics/funnel`` and ``.../funnel.csv``
- ``GET /api/v1/analytics/layer-flows`` and ``.../layer-flows.csv``
- ``GET /api/v1/analytics/lifecycle`` and ``.../lifecycle.csv``

Retention and funnels can also be asked as a run (``?async=true`` on the JSON endpoint):
202 with the run's id and ``status_url``, computed by a task on the ``reports`` queue
(``segments.analytics.runs``); ``GET /api/v1/analytics/runs/<id>`` answers its status,
timings and, once done, the same JSON the synchronous endpoint returns. A key sees only its
own runs. Parameters are validated before anything is queued.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.http import HttpResponse
from django.urls import path, reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from config.replica import replica_reads
from segments.analytics import exports
from segments.analytics.errors import AnalyticsInputError
from segments.analytics.flows import LayerFlows, LifecycleCounts, layer_flows, lifecycle_counts
from segments.analytics.funnels import PRESETS, FunnelResult, funnel
from segments.analytics.query import flows_args, funnel_spec, lifecycle_args, retention_spec
from segments.analytics.retention import RetentionTable, retention_table
from segments.analytics.runs import analytics_run_get, analytics_run_request, run_as_dict
from segments.models import AnalyticsRun

RETENTION_PARAMETERS = [
    OpenApiParameter("anchor", OpenApiTypes.STR, enum=["signup", "first_purchase"], default="signup"),
    OpenApiParameter("cohort", OpenApiTypes.STR, enum=["day", "week", "month"], default="week"),
    OpenApiParameter("period", OpenApiTypes.STR, enum=["day", "week"], default="day"),
    OpenApiParameter("periods", OpenApiTypes.INT, default=30, description="Periods 0..N (at most 400)."),
    OpenApiParameter(
        "return_events", OpenApiTypes.STR, description="Comma-separated event types; default every type but signup."
    ),
    OpenApiParameter("purchase_event", OpenApiTypes.STR, default="order", description="For anchor=first_purchase."),
    OpenApiParameter("cohort_from", OpenApiTypes.DATE, description="First local anchor day (default: a span back)."),
    OpenApiParameter("cohort_to", OpenApiTypes.DATE, description="Last local anchor day (default: as_of's UTC day)."),
    OpenApiParameter(
        "as_of", OpenApiTypes.DATETIME, description="The instant the table is computed at (now; not in the future)."
    ),
    OpenApiParameter(
        "breakdown",
        OpenApiTypes.STR,
        description="A dimension key or layer:<dimension> (layer held at the anchor), or attribute:<name> "
        "(a customer attribute such as the acquisition channel: its stored value, no history).",
    ),
]
FUNNEL_PARAMETERS = [
    OpenApiParameter("preset", OpenApiTypes.STR, enum=list(PRESETS), description="Or give steps."),
    OpenApiParameter(
        "steps", OpenApiTypes.STR, description="Comma-separated: event or event[key=value], e.g. visit[page=product]."
    ),
    OpenApiParameter("window_seconds", OpenApiTypes.INT, description="Conversion window from the entry event."),
    OpenApiParameter("order", OpenApiTypes.STR, enum=["strict", "any"], default="strict"),
    OpenApiParameter("start", OpenApiTypes.DATETIME, description="Entries from (default: end - 30 days)."),
    OpenApiParameter("end", OpenApiTypes.DATETIME, description="Entries before (default: now)."),
    OpenApiParameter(
        "breakdown", OpenApiTypes.STR, description="layer:<dimension> (layer at entry) or attribute:<name>."
    ),
]
ERRORS = {400: OpenApiResponse(description="A bad parameter; `errors` names it.")}
ASYNC = OpenApiParameter(
    "async",
    OpenApiTypes.BOOL,
    default=False,
    description="true: answer 202 with a run to poll (`status_url`) instead of computing on this request.",
)


class AnalyticsRunSerializer(serializers.Serializer):
    """A run's status (documentation only: ``segments.analytics.runs.run_as_dict`` builds it)."""

    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=AnalyticsRun.Kind.choices)
    status = serializers.ChoiceField(choices=AnalyticsRun.Status.choices)
    status_url = serializers.CharField()
    created = serializers.BooleanField(required=False, help_text="On the 202: whether this call queued the run.")
    spec = serializers.JSONField(help_text="The validated spec, defaults filled in.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    queued_seconds = serializers.FloatField(allow_null=True)
    run_seconds = serializers.FloatField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    result = serializers.JSONField(allow_null=True, help_text="When done: the synchronous endpoint's JSON.")


RUN_ACCEPTED = {202: OpenApiResponse(response=AnalyticsRunSerializer, description="Asked with async=true: the run.")}


def _owner(request: Request) -> str:
    return f"key:{request.auth.pk}"


def _run_url(request: Request, run: AnalyticsRun) -> str:
    return request.build_absolute_uri(reverse("v1:segments:analytics-run", kwargs={"run_id": run.pk}))


def _wants_run(request: Request, csv: bool) -> bool:
    raw = request.query_params.get("async")
    if raw is None:
        return False
    if raw.lower() not in ("true", "false", "1", "0"):
        raise ValidationError({"async": ["Give true or false."]})
    wanted = raw.lower() in ("true", "1")
    if wanted and csv:
        raise ValidationError({"async": ["Runs answer JSON: ask the JSON endpoint (without .csv)."]})
    return wanted


def _run_response(request: Request, kind: str) -> Response:
    """Validate (a 400 naming the parameter, nothing queued), then the run: 202 either way,
    ``created`` true for exactly the call that queued it."""
    run, created = _computed(
        lambda: analytics_run_request(kind=kind, params=_params(request), owner=_owner(request), api_key=request.auth)
    )
    url = _run_url(request, run)
    return Response(
        {**run_as_dict(run, url), "created": created}, status=status.HTTP_202_ACCEPTED, headers={"Location": url}
    )


def _computed(build: Callable[[], Any]) -> Any:
    try:
        return build()
    except AnalyticsInputError as error:
        raise ValidationError({error.field: [error.message]}) from None


def _formatted(*groups: list[OpenApiParameter]) -> frozenset[str]:
    return frozenset(
        p.name
        for group in groups
        for p in group
        if p.enum or p.type in (OpenApiTypes.DATE, OpenApiTypes.DATETIME, OpenApiTypes.INT)
    )


def _params(request: Request) -> Any:
    params = request.query_params
    blank = sorted(name for name in FORMATTED if name in params and not params.get(name))
    if blank:
        raise ValidationError({name: ["Give a value or leave the parameter out."] for name in blank})
    return params


def _csv_response(body: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class RetentionView(APIView):
    required_scope = Scope.REPORTS_READ
    csv = False

    @extend_schema(
        operation_id="analytics_retention",
        summary="Retention cohort table",
        description=(
            "Scope `reports:read`. Cohorts by sign-up or first purchase (day/week/month of the customer's local "
            "anchor day) × return period (day N / week N): retained *on* the period and *on or after* it, with "
            "rates; D1/D7/D30 headlines; with `breakdown`, the same per layer held at the anchor. A period not "
            "over yet for every customer of a cohort, or an empty cohort, is null with a `reason`."
        ),
        parameters=[*RETENTION_PARAMETERS, ASYNC],
        responses={
            200: OpenApiResponse(response=exports.dataclass_schema(RetentionTable)),
            **RUN_ACCEPTED,
            **ERRORS,
        },
        tags=["analytics"],
    )
    @replica_reads()  # reading work: the replica when fresh (config/replica.py)
    def get(self, request: Request) -> HttpResponse:
        if _wants_run(request, self.csv):
            return _run_response(request, AnalyticsRun.Kind.RETENTION)
        table = _computed(lambda: retention_table(spec=retention_spec(_params(request))))
        if self.csv:
            return _csv_response(exports.retention_csv(table), "retention.csv")
        return HttpResponse(exports.to_json(table), content_type="application/json")


class FunnelView(APIView):
    required_scope = Scope.REPORTS_READ
    csv = False

    @extend_schema(
        operation_id="analytics_funnel",
        summary="Step funnel",
        description=(
            "Scope `reports:read`. Customers who reached each step (strict or any order, within the conversion "
            "window from the entry event), conversion from the previous step and overall, median seconds from "
            "the previous step; with `breakdown`, the same per group. Presets: "
            + ", ".join(f"`{k}`" for k in PRESETS)
            + "."
        ),
        parameters=[*FUNNEL_PARAMETERS, ASYNC],
        responses={200: OpenApiResponse(response=exports.dataclass_schema(FunnelResult)), **RUN_ACCEPTED, **ERRORS},
        tags=["analytics"],
    )
    @replica_reads()  # reading work: the replica when fresh (config/replica.py)
    def get(self, request: Request) -> HttpResponse:
        if _wants_run(request, self.csv):
            return _run_response(request, AnalyticsRun.Kind.FUNNEL)
        result = _computed(lambda: funnel(spec=funnel_spec(_params(request))))
        if self.csv:
            return _csv_response(exports.funnel_csv(result), "funnel.csv")
        return HttpResponse(exports.to_json(result), content_type="application/json")


class RetentionCsvView(RetentionView):
    csv = True

    @extend_schema(
        operation_id="analytics_retention_csv",
        summary="Retention cohort table (CSV)",
        description="Scope `reports:read`. The same table, one line per cohort × period (and layer).",
        parameters=RETENTION_PARAMETERS,
        responses={(200, "text/csv"): OpenApiResponse(response=OpenApiTypes.STR), **ERRORS},
        tags=["analytics"],
    )
    @replica_reads()  # reading work: the replica when fresh (config/replica.py)
    def get(self, request: Request) -> HttpResponse:
        return super().get(request)


class FunnelCsvView(FunnelView):
    csv = True

    @extend_schema(
        operation_id="analytics_funnel_csv",
        summary="Step funnel (CSV)",
        description="Scope `reports:read`. The same funnel, one line per step (and group).",
        parameters=FUNNEL_PARAMETERS,
        responses={(200, "text/csv"): OpenApiResponse(response=OpenApiTypes.STR), **ERRORS},
        tags=["analytics"],
    )
    @replica_reads()  # reading work: the replica when fresh (config/replica.py)
    def get(self, request: Request) -> HttpResponse:
        return super().get(request)


PERIOD_PARAMETERS = [
    OpenApiParameter("grain", OpenApiTypes.STR, enum=["day", "week", "month"], default="week"),
    OpenApiParameter("start", OpenApiTypes.DATE, description="First period (default: a span back from end)."),
    OpenApiParameter("end", OpenApiTypes.DATE, description="Last period (default: today, UTC)."),
]

# Parameters the schema documents as formatted values (dates, instants, integers, enums):
# given but blank is a bad value, not "use the default" (the HTML pages' empty form fields
# still mean the default; they do not come through here).
FORMATTED = _formatted(RETENTION_PARAMETERS, FUNNEL_PARAMETERS, PERIOD_PARAMETERS)


class LayerFlowsView(APIView):
    required_scope = Scope.REPORTS_READ
    csv = False

    @extend_schema(
        operation_id="analytics_layer_flows",
        summary="Moves between a dimension's layers per period",
        description=(
            "Scope `reports:read`. From layer history: per period (UTC day/week/month of the recompute that moved "
            "them), how many customers moved from one layer to another (`from_layer` is empty for a first layer)."
        ),
        parameters=[
            OpenApiParameter("dimension", OpenApiTypes.STR, default="rfm", description="A dimension key."),
            *PERIOD_PARAMETERS,
        ],
        responses={200: OpenApiResponse(response=exports.dataclass_schema(LayerFlows)), **ERRORS},
        tags=["analytics"],
    )
    @replica_reads()  # reading work: the replica when fresh (config/replica.py)
    def get(self, request: Request) -> HttpResponse:
        flows = _computed(lambda: layer_flows(**flows_args(_params(request))))
        if self.csv:
            return _csv_response(exports.flows_csv(flows), "layer-flows.csv")
        return HttpResponse(exports.to_json(flows), content_type="application/json")


class LifecycleView(APIView):
    required_scope = Scope.REPORTS_READ
    csv = False

    @extend_schema(
        operation_id="analytics_lifecycle",
        summary="New, returning, resurrecting and dormant customers per period",
        description=(
            "Scope `reports:read`. Per period of the customers' local days: active for the first time (new), "
            "active in the period before too (returning), active again after a gap (resurrecting), active in the "
            "period before but not in this one (dormant). A period not over yet in every time zone has "
            "`complete: false`: its counts are partial (dormant: not back *yet*)."
        ),
        parameters=[
            *PERIOD_PARAMETERS,
            OpenApiParameter("events", OpenApiTypes.STR, description="Comma-separated activity event types (all)."),
        ],
        responses={200: OpenApiResponse(response=exports.dataclass_schema(LifecycleCounts)), **ERRORS},
        tags=["analytics"],
    )
    @replica_reads()  # reading work: the replica when fresh (config/replica.py)
    def get(self, request: Request) -> HttpResponse:
        counts = _computed(lambda: lifecycle_counts(**lifecycle_args(_params(request))))
        if self.csv:
            return _csv_response(exports.lifecycle_csv(counts), "lifecycle.csv")
        return HttpResponse(exports.to_json(counts), content_type="application/json")


class LayerFlowsCsvView(LayerFlowsView):
    csv = True

    @extend_schema(
        operation_id="analytics_layer_flows_csv",
        summary="Layer flows (CSV)",
        description="Scope `reports:read`. One line per period, from and to layer.",
        parameters=[OpenApiParameter("dimension", OpenApiTypes.STR, default="rfm"), *PERIOD_PARAMETERS],
        responses={(200, "text/csv"): OpenApiResponse(response=OpenApiTypes.STR), **ERRORS},
        tags=["analytics"],
    )
    @replica_reads()  # reading work: the replica when fresh (config/replica.py)
    def get(self, request: Request) -> HttpResponse:
        return super().get(request)


class LifecycleCsvView(LifecycleView):
    csv = True

    @extend_schema(
        operation_id="analytics_lifecycle_csv",
        summary="Lifecycle counts (CSV)",
        description="Scope `reports:read`. One line per period.",
        parameters=[*PERIOD_PARAMETERS, OpenApiParameter("events", OpenApiTypes.STR)],
        responses={(200, "text/csv"): OpenApiResponse(response=OpenApiTypes.STR), **ERRORS},
        tags=["analytics"],
    )
    @replica_reads()  # reading work: the replica when fresh (config/replica.py)
    def get(self, request: Request) -> HttpResponse:
        return super().get(request)


class AnalyticsRunView(APIView):
    required_scope = Scope.REPORTS_READ

    @extend_schema(
        operation_id="analytics_run",
        summary="An analytics run's status and, when done, its result",
        description=(
            "Scope `reports:read`. A run asked with `async=true` on the retention or funnel endpoint: `queued`, "
            "`running`, `done` (with `result`, exactly the synchronous endpoint's JSON) or `failed` (with `error`; "
            "a run queued or running past the configured bound is reported failed). Only the key that asked sees it."
        ),
        parameters=[OpenApiParameter("run_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={
            200: OpenApiResponse(response=AnalyticsRunSerializer),
            404: OpenApiResponse(description="No such run for this key."),
        },
        tags=["analytics"],
    )
    def get(self, request: Request, run_id: str) -> Response:
        # A str route, not <uuid:>: an unauthenticated caller gets 401 whatever the id, like
        # every route, and an id that is no UUID is simply no run of this key.
        try:
            run_uuid = uuid.UUID(run_id)
        except ValueError:
            raise NotFound("No such run for this key.") from None
        run = analytics_run_get(run_id=run_uuid, owner=_owner(request))
        if run is None:
            raise NotFound("No such run for this key.")
        return Response(run_as_dict(run, _run_url(request, run)))


urlpatterns = [
    path("analytics/runs/<str:run_id>", AnalyticsRunView.as_view(), name="analytics-run"),
    path("analytics/layer-flows", LayerFlowsView.as_view(), name="analytics-layer-flows"),
    path("analytics/layer-flows.csv", LayerFlowsCsvView.as_view(), name="analytics-layer-flows-csv"),
    path("analytics/lifecycle", LifecycleView.as_view(), name="analytics-lifecycle"),
    path("analytics/lifecycle.csv", LifecycleCsvView.as_view(), name="analytics-lifecycle-csv"),
    path("analytics/retention", RetentionView.as_view(), name="analytics-retention"),
    path("analytics/retention.csv", RetentionCsvView.as_view(), name="analytics-retention-csv"),
    path("analytics/funnel", FunnelView.as_view(), name="analytics-funnel"),
    path("analytics/funnel.csv", FunnelCsvView.as_view(), name="analytics-funnel-csv"),
]
