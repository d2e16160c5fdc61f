"""The tier playbook pages, admin-styled, mounted at ``/admin/playbook/`` (namespace ``playbook``)
before the admin site's catch-all.

- ``playbook:index``  per dimension, the matrix of layers x campaigns (paginated by campaign);
- ``playbook:csv``    the same page as CSV.

Who may see it: staff (else the admin login page) with both ``experiments.view_report``
(every number here comes from the lift reports) and ``campaigns.view_campaign`` (the
columns are campaigns); growth and marketer users have both. Anyone else gets 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from campaigns.playbook import (
    Cell,
    Column,
    Matrix,
    Playbook,
    VariantLift,
    playbook_build,
    playbook_campaigns_queryset,
    playbook_csv,
    playbook_unmeasured_queryset,
)
from config.replica import replica_reads
from experiments.reports import present
from experiments.stats import Interval

PERMISSIONS = ("experiments.view_report", "campaigns.view_campaign")
# Campaigns (columns) per page: each distinct experiment costs one report build.
PAGE_SIZE = 8
UNMEASURED_SHOWN = 20
MINUS = "\u2212"


def playbook_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff login (admin login page otherwise) and both permissions (403 otherwise)."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_perms(PERMISSIONS):
            raise PermissionDenied("You need the 'Can view lift reports' and 'Can view campaign' permissions.")
        with replica_reads():  # reading work: the replica when fresh (config/replica.py)
            return view(request, *args, **kwargs)

    return admin.site.admin_view(guarded)


# --------------------------------------------------------------------------------------
# View models
# --------------------------------------------------------------------------------------


def _signed(value: float, decimals: int) -> str:
    text = f"{abs(value):.{decimals}f}"
    if float(text) == 0:
        return text
    return ("+" if value > 0 else MINUS) + text


def per_1000_text(value: float | None) -> str:
    return "not defined" if value is None else _signed(value, 1)


def per_1000_interval_text(ci: Interval | None) -> str:
    return "not defined" if ci is None else f"{_signed(ci.low, 1)} to {_signed(ci.high, 1)}"


@dataclass(frozen=True)
class LiftView:
    variant: str
    variant_name: str
    offer: str
    relative: str
    relative_ci: str
    per_1000: str
    per_1000_ci: str
    adjusted_p: str
    customers: str


def _lift_view(v: VariantLift) -> LiftView:
    return LiftView(
        variant=v.variant,
        variant_name=v.variant_name,
        offer=v.offer,
        relative=present.pct(v.relative_lift, {}, "relative_lift").text,
        relative_ci=present.interval_pct(v.relative_lift_ci, {}, "relative_lift_ci").text,
        per_1000=per_1000_text(v.per_1000),
        per_1000_ci=per_1000_interval_text(v.per_1000_ci),
        adjusted_p=present.p_value(v.adjusted_p_value, {}, "adjusted_p_value").text,
        customers=f"{v.control_customers + v.customers:,}",
    )


@dataclass(frozen=True)
class CellView:
    outcome: str
    css: str
    headline: str
    customers: str
    best: LiftView | None
    losses: tuple[LiftView, ...]
    explanation: str
    caveats: tuple[str, ...]


HEADLINES = {
    "win": "Winner",
    "loss": "Significant loss",
    "exploratory": "Exploratory lead (not a decision)",
    "not_yet_evaluable": "Not yet evaluable",
    "not_enough_data": "Not enough data",
    "no_evidence": "No evidence",
    "no_customers": "No customers",
    "no_report": "No report",
    "no_reach": "Reached nobody",
}


def _cell_view(cell: Cell) -> CellView:
    return CellView(
        outcome=cell.outcome,
        css=f"pb-{cell.outcome.replace('_', '-')}",
        headline=HEADLINES[cell.outcome],
        customers=f"{cell.customers:,}",
        best=_lift_view(cell.best) if cell.best else None,
        losses=tuple(_lift_view(v) for v in cell.losses if cell.outcome == "win"),
        explanation=cell.explanation,
        caveats=cell.caveats,
    )


@dataclass(frozen=True)
class ColumnView:
    column: Column
    report_url: str
    campaign_url: str
    customers: str


@dataclass(frozen=True)
class RowView:
    layer: str
    label: str
    cells: tuple[tuple[Column, CellView], ...]
    reached: bool


@dataclass(frozen=True)
class MatrixView:
    dimension: str
    name: str
    rows: tuple[RowView, ...]  # layers some campaign on the page reached
    unreached: tuple[str, ...]  # labels of the layers none reached
    wins: int
    losses: int


def _matrix_view(playbook: Playbook, matrix: Matrix) -> MatrixView:
    rows = tuple(
        RowView(
            layer=row.layer or "none",
            label=row.label,
            cells=tuple(zip(playbook.columns, (_cell_view(c) for c in row.cells), strict=True)),
            reached=any(c.outcome not in ("no_customers", "no_report") for c in row.cells),
        )
        for row in matrix.rows
    )
    cells = [c for row in matrix.rows for c in row.cells]
    return MatrixView(
        dimension=matrix.dimension,
        name=matrix.name,
        rows=tuple(r for r in rows if r.reached),
        unreached=tuple(r.label for r in rows if not r.reached),
        wins=sum(c.outcome == "win" for c in cells),
        losses=sum(c.outcome == "loss" for c in cells),
    )


def _page(request: HttpRequest) -> Page:
    return Paginator(playbook_campaigns_queryset(), PAGE_SIZE).get_page(request.GET.get("page"))


def _report_url(experiment_key: str) -> str:
    return reverse("reports:experiment", args=[experiment_key])


# --------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------


@playbook_view
def index(request: HttpRequest) -> HttpResponse:
    page = _page(request)
    playbook = playbook_build(campaigns=list(page.object_list))
    unmeasured = playbook_unmeasured_queryset()
    csv_url = reverse("playbook:csv") + (f"?page={page.number}" if page.paginator.num_pages > 1 else "")
    context = {
        **admin.site.each_context(request),
        "title": "Tier playbook",
        "page": page,
        "playbook": playbook,
        "columns": [
            ColumnView(
                column=column,
                report_url=_report_url(column.experiment_key),
                campaign_url=reverse("admin:campaigns_campaign_change", args=[column.campaign_pk]),
                customers=f"{column.customers:,}",
            )
            for column in playbook.columns
        ],
        "overall": _matrix_view(playbook, playbook.overall),
        "matrices": [_matrix_view(playbook, m) for m in playbook.dimensions],
        "unmeasured": list(unmeasured[:UNMEASURED_SHOWN]),
        "unmeasured_more": max(unmeasured.count() - UNMEASURED_SHOWN, 0),
        "csv_url": csv_url,
        "alpha_percent": f"{playbook.alpha:.0%}",
    }
    return render(request, "campaigns/playbook/index.html", context)


@playbook_view
def export_csv(request: HttpRequest) -> HttpResponse:
    page = _page(request)
    playbook = playbook_build(campaigns=list(page.object_list))
    body = playbook_csv(playbook, report_url=lambda key: request.build_absolute_uri(_report_url(key)))
    suffix = f"-page{page.number}" if page.paginator.num_pages > 1 else ""
    filename = f"tier-playbook-{timezone.now():%Y%m%d}{suffix}.csv"
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
