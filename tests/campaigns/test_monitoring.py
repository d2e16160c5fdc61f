"""Monitoring pages: what a campaign did (SQL aggregates), links between campaign,
experiment, report and mailbox, and a customer's timeline (one query per source)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, Coupon, Delivery, MailboxMessage, Recipient, TopicOptOut
from campaigns.monitoring import SOURCE_NAMES, campaign_monitor, customer_timeline
from experiments import services
from experiments.models import Assignment
from segments.models import Dimension, Event, EventType, LayerHistory
from tests.campaigns.builders import campaign, customers, run_broadcast, send_pending
from tests.campaigns.test_decide import _experiment

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _sent_campaign(settings: Any, n: int = 200, key: str = "mon") -> Campaign:
    settings.EMAIL_BACKEND = "campaigns.mailbox.DatabaseMailboxBackend"
    customers(n, prefix=key)
    row = campaign(key=key, experiment=_experiment(f"{key}-x", holdout_percent=20))
    run_broadcast(row)
    send_pending(row)
    return row


def test_campaign_monitor__control_holdout_and_a_failure__counts_match_the_rows(settings, no_caps) -> None:  # type: ignore[no-untyped-def]
    # Given a broadcast split control / offer with a 20% holdout, sent, and one refused message
    row = _sent_campaign(settings)
    failed = Delivery.objects.filter(campaign=row, status="sent").order_by("pk").first()
    Delivery.objects.filter(pk=failed.pk).update(
        status="failed", reason="permanent_error", last_error="550 5.1.1 <x@example.com>: user unknown"
    )
    # When the monitor is read
    data = campaign_monitor(campaign=row)
    # Then every number is the rows' own count
    recipients = Recipient.objects.filter(campaign=row)
    assert data.decided_customers == 200 == sum(d.customers for d in data.decisions)
    by_outcome = dict(recipients.values_list("outcome").annotate(n=Count("pk")))
    assert {o: sum(d.customers for d in data.decisions if d.outcome == o) for o in by_outcome} == by_outcome
    assert data.assigned_per_variant == dict(
        Assignment.objects.filter(experiment=row.experiment).values_list("variant__key").annotate(n=Count("pk"))
    )
    rows = {d.role: d for d in data.deliveries}
    assert set(rows) == {"treated", "control", "holdout"}
    assert "control" in rows["control"].label and "would have sent" in rows["control"].label
    assert rows["holdout"].label.startswith("holdout")
    assert rows["control"].statuses == {"suppressed": by_outcome["control"]}
    assert rows["control"].reasons == (("suppressed", "control", by_outcome["control"]),)
    assert rows["holdout"].statuses == {"suppressed": by_outcome["holdout"]}
    assert rows["treated"].statuses == {"sent": by_outcome["treated"] - 1, "failed": 1}
    assert rows["treated"].reasons == (("failed", "permanent_error", 1),)
    # progress: the running total ends at the messages sent
    assert data.progress[-1][2] == by_outcome["treated"] - 1 and data.progress_unit == "minute"
    # errors: the provider's answer, by reason and verbatim
    assert data.failures == {"permanent_error": 1}
    assert [(e.key, e.last_error[:3]) for e in data.errors] == [(failed.key, "550")]
    assert data.audience_now == 200


def test_campaign_monitor__more_customers__same_number_of_queries(settings, no_caps) -> None:  # type: ignore[no-untyped-def]
    small = _sent_campaign(settings, n=20, key="small")
    big = _sent_campaign(settings, n=300, key="big")
    with CaptureQueriesContext(connection) as few:
        campaign_monitor(campaign=small)
    with CaptureQueriesContext(connection) as many:
        campaign_monitor(campaign=big)
    # 8 aggregates and the last errors, plus the audience definition's count (5)
    assert len(many) == len(few) <= 14


def test_campaign_monitor__nothing_decided__zeros_and_no_progress(no_caps) -> None:  # type: ignore[no-untyped-def]
    row = campaign(key="idle")
    data = campaign_monitor(campaign=row)
    assert (data.decided_customers, data.decisions, data.deliveries, data.progress) == (0, (), (), ())


def test_monitor_page__growth_and_marketer__numbers_and_links(settings, growth_user, marketer_user, no_caps) -> None:  # type: ignore[no-untyped-def]
    row = _sent_campaign(settings, n=40)
    url = reverse("monitor:campaign", args=[row.pk])
    for user in (growth_user, marketer_user):
        page = _client(user).get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert reverse("admin:experiments_experiment_change", args=[row.experiment_id]) in html
        assert reverse("reports:experiment", args=[row.experiment.key]) in html
        assert reverse("admin:campaigns_mailboxmessage_changelist") + f"?campaign={row.pk}" in html
        assert 'id="progress-chart"' in html and "vendor/chartjs/chart.umd.min.js" in html
        assert "Control (would have sent)" in html and "holdout (would have sent)" in html
    # and back: campaign -> monitoring, experiment -> campaign and report, report -> campaign
    client = _client(growth_user)
    assert url in client.get(reverse("admin:campaigns_campaign_change", args=[row.pk])).content.decode()
    assert url in client.get(reverse("admin:campaigns_campaign_changelist")).content.decode()
    experiment_page = client.get(reverse("admin:experiments_experiment_change", args=[row.experiment_id]))
    assert url in experiment_page.content.decode()
    assert url in client.get(reverse("reports:experiment", args=[row.experiment.key])).content.decode()


def test_monitor_page__anonymous_or_without_permission__login_or_403(django_user_model, no_caps) -> None:  # type: ignore[no-untyped-def]
    row = campaign(key="guarded")
    url = reverse("monitor:campaign", args=[row.pk])
    assert Client().get(url).status_code == 302
    staff = django_user_model.objects.create_user("plain", password="x", is_staff=True)
    assert _client(staff).get(url).status_code == 403


def test_mailbox_campaign_filter__two_campaigns__only_that_campaigns_messages(settings, growth_user, no_caps) -> None:  # type: ignore[no-untyped-def]
    first = _sent_campaign(settings, n=12, key="one")
    second = _sent_campaign(settings, n=7, key="two")
    page = _client(growth_user).get(reverse("admin:campaigns_mailboxmessage_changelist"), {"campaign": first.pk})
    keys = {m.delivery_key for m in page.context["cl"].result_list}
    assert keys == set(Delivery.objects.filter(campaign=first, status="sent").values_list("key", flat=True))
    assert keys and MailboxMessage.objects.filter(delivery_key__startswith=f"d{second.pk}-").exists()
    # and a message links back to its campaign's monitoring page
    message = MailboxMessage.objects.filter(delivery_key__startswith=f"d{second.pk}-").first()
    change = _client(growth_user).get(reverse("admin:campaigns_mailboxmessage_change", args=[message.pk]))
    assert reverse("monitor:campaign", args=[second.pk]) in change.content.decode()


# --------------------------------------------------------------------------------------
# Customer timeline
# --------------------------------------------------------------------------------------


def _lived_customer(settings: Any) -> tuple[Any, list[tuple[dt.datetime, str]]]:
    """One customer with a row in every source, at known times (two of them equal)."""
    settings.EMAIL_BACKEND = "campaigns.mailbox.DatabaseMailboxBackend"
    customer = customers(1, prefix="tl")[0]
    row = campaign(key="tl")  # no experiment: the customer is treated, sent a coupon
    run_broadcast(row)
    send_pending(row)
    services.assignment_get_or_create(experiment=_experiment("tl-x"), customer=customer, expose=True)
    t0 = timezone.now().replace(microsecond=0) - dt.timedelta(days=10)
    at = {name: t0 + dt.timedelta(hours=i) for i, name in enumerate(SOURCE_NAMES)}
    at["exposure"] = at["assignment"]  # a tie between two sources
    # channel consent (on the customer's row): consented with the first event, opted out later
    customer.email_consent_at, customer.email_opt_out_at = at["event"], at["consent"]
    customer.save(update_fields=["email_consent_at", "email_opt_out_at"])
    kind = EventType.objects.create(code="order_paid", name="Order paid")
    Event.objects.create(event_id="e1", customer=customer, event_type=kind, occurred_at=at["event"])
    Event.objects.create(
        event_id="e2", customer=customer, event_type=kind, occurred_at=at["event"] - dt.timedelta(days=1)
    )
    dimension = Dimension.objects.get(key="expiry")
    LayerHistory.objects.create(
        customer=customer, dimension=dimension, layer=dimension.layers.first(), entered_at=at["layer"]
    )
    Assignment.objects.filter(customer=customer).update(assigned_at=at["assignment"], first_exposed_at=at["exposure"])
    Recipient.objects.filter(customer=customer).update(decided_at=at["decision"])
    Delivery.objects.filter(customer=customer).update(created_at=at["message"])
    Coupon.objects.filter(customer=customer).update(redeemed_at=at["redemption"], redemption_ref="order-9")
    TopicOptOut.objects.create(customer=customer, channel="email", topic="promotions", changed_at=at["opt_out"])
    expected = sorted(
        [(t, name) for name, t in at.items()]
        + [(at["event"] - dt.timedelta(days=1), "event"), (at["event"], "consent")],
        reverse=True,
    )
    return customer, expected


def test_customer_timeline__every_source__newest_first_pages_without_gap_or_repeat(settings, no_caps) -> None:  # type: ignore[no-untyped-def]
    customer, expected = _lived_customer(settings)
    seen: list[tuple[dt.datetime, str]] = []
    before = None
    pages = 0
    while True:
        with CaptureQueriesContext(connection) as queries:
            page = customer_timeline(customer_id=customer.pk, size=2, before=before, customer=customer)
        assert len(queries) == len(SOURCE_NAMES) - 1  # one query per table, whatever the page
        seen += [(e.at, e.source) for e in page.entries]
        pages += 1
        if page.next_cursor is None:
            break
        before = page.next_cursor
    assert [s for _, s in seen] == [s for _, s in sorted(expected, key=lambda x: (x[0], x[1]), reverse=True)]
    assert len(seen) == len(set(seen)) == 11 and pages == 6
    assert [t for t, _ in seen] == sorted((t for t, _ in seen), reverse=True)


def test_customer_timeline_page__growth_user__entries_links_and_older_link(settings, growth_user, no_caps) -> None:  # type: ignore[no-untyped-def]
    customer, _ = _lived_customer(settings)
    client = _client(growth_user)
    url = reverse("monitor:customer", args=[customer.external_id])
    html = client.get(url).content.decode()
    for text in (
        "Event order_paid",
        "Entered layer",
        "Assigned to",
        "Exposed to",
        "Redeemed coupon",
        "Opted out of Email / Promotions",
        "Opted out of email (channel)",
    ):
        assert text in html
    assert reverse("monitor:campaign", args=[Recipient.objects.get(customer=customer).campaign_id]) in html
    assert url in client.get(reverse("admin:segments_customer_change", args=[customer.pk])).content.decode()
    only_events = client.get(url, {"source": "event"}).content.decode()
    assert "Event order_paid" in only_events and "Redeemed coupon" not in only_events
    assert client.get(url, {"before": "yesterday"}).status_code == 400
    assert client.get(reverse("monitor:customer", args=["nobody"])).status_code == 404


def test_monitor_page__campaign_without_experiment_nothing_sent__says_so(growth_user, no_caps) -> None:  # type: ignore[no-untyped-def]
    row = campaign(key="plain")
    html = _client(growth_user).get(reverse("monitor:campaign", args=[row.pk])).content.decode()
    assert "No experiment: everyone is treated" in html and 'id="no-reach"' in html and 'id="no-progress"' in html
    assert 'id="link-report"' not in html
