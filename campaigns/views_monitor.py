"""Monitoring pages, admin-styled, mounted at ``/admin/monitor/`` (namespace ``monitor``)
before the admin site's catch-all.

- ``monitor:campaign``  what one campaign did: audience, decisions per variant and reason,
  deliveries per variant and reason, delivery progress over time, errors; links to the
  campaign, its experiment, its lift report, its deliveries and its mailbox messages;
- ``monitor:customer``  one customer's timeline (``?before=`` pages to older entries).

Who may see them: staff (else the admin login page) with ``campaigns.view_campaign``
(campaign page) or ``segments.view_customer`` and ``campaigns.view_campaign`` (timeline);
anyone else gets 403. Both pages only read.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from campaigns.models import Campaign
from campaigns.monitoring import SOURCE_NAMES, BadCursor, campaign_monitor, customer_timeline
from segments import selectors as segment_selectors

TIMELINE_PAGE = 50


def _guard(*permissions: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perms(permissions):
                raise PermissionDenied(f"You need the permissions {', '.join(permissions)}.")
            return view(request, *args, **kwargs)

        return admin.site.admin_view(guarded)

    return decorate


@_guard("campaigns.view_campaign")
def campaign(request: HttpRequest, pk: int) -> HttpResponse:
    row = get_object_or_404(Campaign.objects.select_related("experiment"), pk=pk)
    data = campaign_monitor(campaign=row)
    experiment = row.experiment
    links = {
        "campaign": reverse("admin:campaigns_campaign_change", args=[row.pk]),
        "deliveries": reverse("admin:campaigns_delivery_changelist") + f"?campaign__id__exact={row.pk}",
        "recipients": reverse("admin:campaigns_recipient_changelist") + f"?campaign__id__exact={row.pk}",
        "mailbox": reverse("admin:campaigns_mailboxmessage_changelist") + f"?campaign={row.pk}",
        "experiment": reverse("admin:experiments_experiment_change", args=[experiment.pk]) if experiment else "",
        "report": reverse("reports:experiment", args=[experiment.key]) if experiment else "",
    }
    context = {
        **admin.site.each_context(request),
        "title": f"Monitoring: {row.name}",
        "campaign": row,
        "data": data,
        "links": links,
        "chart": {"unit": data.progress_unit, "points": [list(p) for p in data.progress]},
    }
    return render(request, "campaigns/monitor/campaign.html", context)


@_guard("segments.view_customer", "campaigns.view_campaign")
def customer(request: HttpRequest, external_id: str) -> HttpResponse:
    row = segment_selectors.customer_get(external_id=external_id)
    if row is None:
        raise Http404(f"Unknown customer '{external_id}'.")
    sources = [s for s in request.GET.getlist("source") if s in SOURCE_NAMES]
    try:
        timeline = customer_timeline(
            customer_id=row.pk,
            size=TIMELINE_PAGE,
            before=request.GET.get("before") or None,
            sources=sources,
            customer=row,
        )
    except BadCursor as exc:
        return HttpResponseBadRequest(str(exc))
    entries = [
        (entry, reverse(entry.link[0], args=[entry.link[1]]) if entry.link else "") for entry in timeline.entries
    ]
    context = {
        **admin.site.each_context(request),
        "title": f"Timeline: {row.external_id}",
        "customer": row,
        "entries": entries,
        "timeline": timeline,
        "all_sources": SOURCE_NAMES,
        "chosen": set(sources),
        "customer_admin": reverse("admin:segments_customer_change", args=[row.pk]),
    }
    return render(request, "campaigns/monitor/customer.html", context)
