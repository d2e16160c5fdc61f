"""Admin pages of the growth analytics (growth and marketer users: ``segments.view_customer``).

- ``analytics:retention``   the cohort table with D1/D7/D30, curves, a layer breakdown;
- ``analytics:funnel``      a step funnel (presets or steps) with its chart and breakdown;
- ``analytics:flows``       layer flows (a from → to matrix and moves per period) and the
  lifecycle's new / returning / resurrecting / dormant counts per period, charted;
- each with a CSV download (``?download=csv``) of exactly the numbers on the page.

Same query string as the API (``segments.analytics.query``); admin-styled (``base_site``),
wrapped in ``admin.site.admin_view`` (staff login), 403 without the permission. A bad
parameter is shown on the page, next to the form, naming the parameter.

Above ``GROWTH["ANALYTICS_ASYNC_CUSTOMERS"]`` customers (200,000) the retention and funnel
pages do not compute on the request: they ask for an analytics run (``segments.analytics.runs``,
owner ``admin``, shared by the staff) and show "computing since ..." reloading itself every
few seconds; the same URL then finds the run done and renders its stored result with the same
table and chart (or the run's error). Below it, the pages compute on the request as before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.views.generic import RedirectView

from config.replica import replica_reads
from segments.analytics import exports
from segments.analytics.errors import AnalyticsInputError
from segments.analytics.flows import layer_flows, lifecycle_counts
from segments.analytics.funnels import ATTRIBUTE_KEY, PRESETS, FunnelResult, funnel
from segments.analytics.query import flows_args, funnel_spec, lifecycle_args, retention_spec
from segments.analytics.retention import RetentionTable, retention_table
from segments.analytics.runs import analytics_run_request, analytics_runs_for_pages
from segments.models import AnalyticsRun, Customer, Dimension

PERMISSION = "segments.view_customer"
FLOW_LINES = 6  # moves drawn on the flows chart
COLOURS = ["#417690", "#e07b39", "#4c9a2a", "#b03a48", "#6c5ba7", "#c9a227", "#2a9d8f", "#8d6e63"]


def analytics_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_perm(PERMISSION):
            raise PermissionDenied("You need the 'Can view customer' permission.")
        with replica_reads():  # reading work: the replica when fresh (config/replica.py)
            return view(request, *args, **kwargs)

    return admin.site.admin_view(guarded)


def _csv(body: str, name: str) -> HttpResponse:
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _result_or_pending(
    request: HttpRequest, params: Any, kind: str, result_type: type, template: str, context: dict[str, Any]
) -> tuple[Any, HttpResponse | None]:
    """Large databases: the admin run's result when done, else the page saying it is computing
    (or why it failed). Raises ``AnalyticsInputError`` before asking, like the request path."""
    # A failed run's error stays on the page (it does not reload) until "try again" (?retry=1).
    retry = bool(params.get("retry"))
    run, _ = analytics_run_request(kind=kind, params=params, owner="admin", user=request.user, reuse_failed=not retry)
    if run.status == AnalyticsRun.Status.DONE:
        return exports.from_json(result_type, run.result), None
    query = params.copy()
    query["retry"] = "1"
    context.update(run=run, retry_query=query.urlencode())
    return None, render(request, template, context)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


@analytics_view
def retention(request: HttpRequest) -> HttpResponse:
    params = request.GET
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Retention cohorts",
        "params": params,
        "dimensions": list(Dimension.objects.values_list("key", flat=True)),
        "attributes": _attribute_keys(),
    }
    try:
        if analytics_runs_for_pages():
            table, pending = _result_or_pending(
                request,
                params,
                AnalyticsRun.Kind.RETENTION,
                RetentionTable,
                "segments/analytics/retention.html",
                context,
            )
            if pending is not None:
                return pending
        else:
            table = retention_table(spec=retention_spec(params))
    except AnalyticsInputError as error:
        context["error"] = error
        return render(request, "segments/analytics/retention.html", context, status=400)
    if params.get("download") == "csv":
        return _csv(exports.retention_csv(table), "retention.csv")
    key = "rate_on_or_after" if params.get("mode") == "on_or_after" else "rate"
    rows = [
        {
            "cohort": c.cohort,
            "size": c.size,
            "cells": [{"text": _pct(getattr(cell, key)), "reason": cell.reason or ""} for cell in c.cells],
        }
        for c in table.cohorts
    ]
    chart = {
        "labels": list(range(table.periods + 1)),
        "datasets": [
            {
                "label": c.cohort.isoformat(),
                "data": [None if getattr(x, key) is None else round(100 * getattr(x, key), 2) for x in c.cells],
                "borderColor": COLOURS[i % len(COLOURS)],
            }
            for i, c in enumerate(table.cohorts[-8:])
            if c.size
        ],
    }
    by_attribute = (table.breakdown or "").partition("attribute:")[2]
    # "layer:rfm" and "rfm" name the same dimension: headings show its name ("RFM value tiers").
    dimension_key = (table.breakdown or "").removeprefix("layer:")
    dimension_name = Dimension.objects.filter(key=dimension_key).values_list("name", flat=True).first()
    layers = [
        {
            "layer": g.layer or ("(none)" if by_attribute else "(not layered)"),
            "size": sum(c.size for c in g.cohorts),
            # One decimal, as the demo's summary and the CSV give them.
            "headlines": [{"rate": h.rate, "reason": h.reason, "text": _pct(h.rate)} for h in g.headlines],
        }
        for g in table.by_layer
    ]
    attribute_links = []
    for name in context["attributes"]:
        query = params.copy()
        query["breakdown"] = f"attribute:{name}"
        attribute_links.append({"name": name, "query": query.urlencode()})
    context.update(
        table=table,
        rows=rows,
        chart=chart,
        layers=layers,
        by_attribute=by_attribute,
        dimension_name=dimension_name or dimension_key,
        # One layer for everyone (a purchase tier at sign-up): say why, and where to look instead.
        single_layer=len(layers) == 1 and not by_attribute,
        attribute_links=attribute_links,
        # One decimal, as in the layer table, the CSV and the demo's summary (an integer
        # percentage showed 13% beside 12.6%).
        tiles=[{**vars(h), "text": _pct(h.rate)} for h in table.headlines],
        mode=key,
        csv_query=_with_csv(request),
    )
    return render(request, "segments/analytics/retention.html", context)


@analytics_view
def funnel_page(request: HttpRequest) -> HttpResponse:
    params = request.GET
    if not params.get("steps") and not params.get("preset"):
        params = params.copy()
        params["preset"] = "five_step"
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Step funnel",
        "params": params,
        "presets": list(PRESETS),
        # A menu, as on the retention page: the text field wanted "layer:rfm" typed by hand.
        "dimensions": list(Dimension.objects.values_list("key", flat=True)),
        "attributes": _attribute_keys(),
    }
    known = {f"layer:{key}" for key in context["dimensions"]} | {f"attribute:{n}" for n in context["attributes"]}
    # A breakdown given in the URL that the menu does not list stays selectable.
    context["other_breakdown"] = params.get("breakdown") if params.get("breakdown") not in known else ""
    try:
        if analytics_runs_for_pages():
            result, pending = _result_or_pending(
                request, params, AnalyticsRun.Kind.FUNNEL, FunnelResult, "segments/analytics/funnel.html", context
            )
            if pending is not None:
                return pending
        else:
            result = funnel(spec=funnel_spec(params))
    except AnalyticsInputError as error:
        context["error"] = error
        return render(request, "segments/analytics/funnel.html", context, status=400)
    if params.get("download") == "csv":
        return _csv(exports.funnel_csv(result), "funnel.csv")
    groups = [("Everyone", result.steps), *((g.group or "(none)", g.steps) for g in result.groups)]
    chart = {
        "labels": [s.label for s in result.steps],
        "datasets": [
            {"label": name, "data": [s.reached for s in steps], "backgroundColor": COLOURS[i % len(COLOURS)]}
            for i, (name, steps) in enumerate(groups[:9])
        ],
    }
    tables = [
        {
            "name": name,
            "steps": [
                {
                    "step": s,
                    "from_previous": _pct(s.conversion_from_previous),
                    "overall": _pct(s.conversion_overall),
                    "median": ""
                    if s.median_seconds_from_previous is None
                    else _duration(s.median_seconds_from_previous),
                }
                for s in steps
            ],
        }
        for name, steps in groups
    ]
    # Entries less than a window ago may still complete steps: say so, or the default range
    # (the last 30 days, with AARRR's 30-day window) reads as a low conversion.
    open_from = timezone.now() - dt.timedelta(seconds=result.window_seconds)
    context.update(
        result=result,
        chart=chart,
        tables=tables,
        csv_query=_with_csv(request, params),
        open_from=open_from if result.end > open_from else None,
        window_text=_duration(result.window_seconds),  # "30.0 days", not "2592000 s"
    )
    return render(request, "segments/analytics/funnel.html", context)


@analytics_view
def flows(request: HttpRequest) -> HttpResponse:
    params = request.GET
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Layer flows and lifecycle",
        "params": params,
        "dimensions": list(Dimension.objects.values_list("key", flat=True)),
    }
    try:
        moves = layer_flows(**flows_args(params))
        counts = lifecycle_counts(**lifecycle_args(params))
    except AnalyticsInputError as error:
        context["error"] = error
        return render(request, "segments/analytics/flows.html", context, status=400)
    if params.get("download") == "csv":
        return _csv(exports.flows_csv(moves), "layer-flows.csv")
    if params.get("download") == "lifecycle-csv":
        return _csv(exports.lifecycle_csv(counts), "lifecycle.csv")
    # The from -> to matrix over the whole range: a sum of the SQL's per-period rows.
    layers = list(Dimension.objects.get(key=moves.dimension).layers.order_by("position").values_list("key", flat=True))
    totals: dict[tuple[str, str], int] = {}
    for m in moves.moves:
        totals[(m.from_layer, m.to_layer)] = totals.get((m.from_layer, m.to_layer), 0) + m.customers
    matrix = [
        {"from": source or "(entered)", "cells": [totals.get((source, target), 0) for target in layers]}
        for source in ["", *layers]
    ]
    chart = {
        "labels": [p.period.isoformat() + ("" if p.complete else " (so far)") for p in counts.periods],
        "datasets": [
            {"label": "new", "data": [p.new for p in counts.periods], "backgroundColor": COLOURS[2]},
            {"label": "returning", "data": [p.returning for p in counts.periods], "backgroundColor": COLOURS[0]},
            {"label": "resurrecting", "data": [p.resurrecting for p in counts.periods], "backgroundColor": COLOURS[1]},
            {"label": "dormant", "data": [-p.dormant for p in counts.periods], "backgroundColor": COLOURS[3]},
        ],
    }
    # The flows drawn: the largest moves between layers (first placements left out), one
    # line each, customers per period; the matrix and the per-period table hold every move.
    periods = sorted({m.period for m in moves.moves})
    largest = sorted(((n, pair) for pair, n in totals.items() if pair[0]), reverse=True)[:FLOW_LINES]
    per_period = {(m.period, m.from_layer, m.to_layer): m.customers for m in moves.moves}
    flows_chart = {
        "labels": [p.isoformat() for p in periods],
        "datasets": [
            {
                "label": f"{source} → {target}",
                "data": [per_period.get((p, source, target), 0) for p in periods],
                "borderColor": COLOURS[i % len(COLOURS)],
                "backgroundColor": COLOURS[i % len(COLOURS)],
            }
            for i, (_, (source, target)) in enumerate(largest)
        ],
    }
    query = params.copy()
    query["download"] = "lifecycle-csv"
    context.update(
        moves=moves,
        counts=counts,
        layers=layers,
        matrix=matrix,
        chart=chart,
        flows_chart=flows_chart,
        csv_query=_with_csv(request),
        lifecycle_csv_query=query.urlencode(),
    )
    return render(request, "segments/analytics/flows.html", context)


def _attribute_keys(sample: int = 200) -> list[str]:
    """Attribute names to offer as a breakdown: those of the latest ``sample`` customers (a
    bounded read; any other name can still be given in the query string)."""
    keys: set[str] = set()
    for attributes in Customer.objects.order_by("-id").values_list("attributes", flat=True)[:sample]:
        if isinstance(attributes, dict):
            keys.update(k for k in attributes if ATTRIBUTE_KEY.match(k))
    return sorted(keys)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _with_csv(request: HttpRequest, params: Any = None) -> str:
    query = (params if params is not None else request.GET).copy()
    query["download"] = "csv"
    return query.urlencode()


app_name = "analytics"
urlpatterns = [
    # README points people at /admin/analytics/ (it was a 404): it opens the first page.
    path("", RedirectView.as_view(pattern_name="analytics:retention", query_string=True), name="index"),
    path("retention/", retention, name="retention"),
    path("funnel/", funnel_page, name="funnel"),
    path("flows/", flows, name="flows"),
]
