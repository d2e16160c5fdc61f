"""Send-time rules and what a marketing message carries, through a real SMTP peer
(aiosmtpd) and the local HTTP provider: opt-outs, suppressions, topic opt-outs, quiet hours
after a resume and the end date are honoured for messages already queued; every marketing
email carries the unsubscribe link and the RFC 8058 headers and parses cleanly."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import ChannelPolicy, Delivery, Suppression
from campaigns.services import consent, lifecycle, outbox, suppression
from campaigns.services.delivery import deliveries_send
from segments.models import Customer, Event
from tests.campaigns.builders import campaign, customers, run_broadcast, send_pending
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

URL = re.compile(r"https?://[^\s<>\"]+/u/[^\s<>\"]+")


def _parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_send__customer_opts_out_after_deciding__receives_nothing(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    people = customers(5)
    row = campaign()
    run_broadcast(row)
    assert Delivery.objects.filter(campaign=row, status="pending").count() == 5
    # Given two customers opt out while their messages wait in the outbox
    for person in people[:2]:
        assert consent.channel_unsubscribe(customer_id=person.pk, channel="email", source="test")
    # When the messages are sent
    report = send_pending(row)
    # Then those two receive nothing and their rows say why
    assert report.sent == 3 and smtp_sink.total == 3
    stopped = Delivery.objects.filter(campaign=row, customer__in=people[:2])
    assert set(stopped.values_list("status", "reason")) == {("suppressed", "no_consent")}
    received = {_parsed(m)["To"] for m in smtp_sink.messages}
    assert not received & {p.email for p in people[:2]}


def test_send__address_suppressed_after_deciding__suppressed_not_sent(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    people = customers(3)
    row = campaign()
    run_broadcast(row)
    suppression.suppression_add(channel="email", address=people[0].email.upper(), reason="complaint")
    report = send_pending(row)
    assert report.sent == 2 and smtp_sink.total == 2
    assert Delivery.objects.get(campaign=row, customer=people[0]).reason == "suppressed"


def test_send__topic_opt_out__marketing_stopped_transactional_sent(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    person = customers(1)[0]
    promo = campaign(key="promo", topic="promotions")
    receipt = campaign(key="receipt", topic="promotions", is_transactional=True)
    run_broadcast(promo)
    run_broadcast(receipt)
    consent.topic_set(customer_id=person.pk, channel="email", topic="promotions", subscribed=False, source="test")
    assert send_pending(promo).sent == 0
    assert send_pending(receipt).sent == 1
    assert Delivery.objects.get(campaign=promo).reason == "no_consent"
    # A topic the customer kept is still sent.
    renewal = campaign(key="renewal", topic="renewals")
    run_broadcast(renewal)
    assert send_pending(renewal).sent == 1


def test_send__campaign_past_its_end_date__campaign_ended(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    customers(2)
    row = campaign(ends_at=timezone.now() + dt.timedelta(hours=1))
    run_broadcast(row)
    with time_machine.travel(timezone.now() + dt.timedelta(hours=2)):
        assert send_pending(row).sent == 0
    assert smtp_sink.total == 0
    assert set(Delivery.objects.filter(campaign=row).values_list("status", "reason")) == {
        ("suppressed", "campaign_ended")
    }


def test_send__resumed_inside_quiet_hours__held_until_window_end_then_sent(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    ChannelPolicy.objects.filter(channel="email").update(quiet_start=dt.time(21, 0), quiet_end=dt.time(8, 0))
    customers(2, tz="Asia/Tokyo")  # UTC+9, no daylight saving
    noon_tokyo = dt.datetime(2026, 1, 10, 3, 0, tzinfo=dt.UTC)
    with time_machine.travel(noon_tokyo, tick=False):
        row = campaign()
        run_broadcast(row, now=noon_tokyo)
        assert Delivery.objects.filter(campaign=row, status="pending").count() == 2  # decided outside the window
        lifecycle.campaign_pause(campaign=row)
        assert send_pending(row).released == 2
    ten_pm_tokyo = dt.datetime(2026, 1, 10, 13, 0, tzinfo=dt.UTC)
    with time_machine.travel(ten_pm_tokyo, tick=False):
        lifecycle.campaign_resume(campaign=row)
        ids = list(Delivery.objects.filter(campaign=row).values_list("pk", flat=True))
        report = deliveries_send(delivery_ids=ids, worker="w:1")
    assert report.sent == 0 and smtp_sink.total == 0
    window_end = dt.datetime(2026, 1, 10, 23, 0, tzinfo=dt.UTC)  # 08:00 in Tokyo
    # Not a try: neither the try nor its time is kept (the email retry period starts at a real try).
    held = Delivery.objects.filter(campaign=row).values_list(
        "status", "reason", "not_before", "attempts", "first_tried_at"
    )
    assert set(held) == {("held", "quiet_hours", window_end, 0, None)}
    with time_machine.travel(window_end + dt.timedelta(seconds=1), tick=False):
        assert outbox.outbox_sweep().unheld == 2
        assert deliveries_send(delivery_ids=ids, worker="w:2").sent == 2
    assert smtp_sink.total == 2
    assert set(Delivery.objects.filter(campaign=row).values_list("first_tried_at", flat=True)) == {
        window_end + dt.timedelta(seconds=1)
    }


def test_send__chunk_checks__one_query_reads_the_chunk_and_its_rules(no_caps: None, smtp_sink, settings) -> None:  # type: ignore[no-untyped-def]
    settings.CAMPAIGNS = {"CLAIM_CHUNK": "50"}
    people = customers(100)
    row = campaign()
    run_broadcast(row)
    consent.channel_unsubscribe(customer_id=people[10].pk, channel="email", source="test")
    suppression.suppression_add(channel="email", address=people[60].email, reason="hard_bounce")
    ids = list(Delivery.objects.filter(campaign=row).values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries:
        report = deliveries_send(delivery_ids=ids, worker="w:1")
    assert report.sent == 98 and report.stopped == 2
    reads = [q["sql"] for q in queries.captured_queries if "campaigns_suppression" in q["sql"]]
    assert len(reads) == 2  # one per chunk: the chunk's own query
    assert all("campaigns_topicoptout" in sql and "segments_customer" in sql for sql in reads)


def test_delivered_email__parses_cleanly__unsubscribe_headers_link_and_footer(  # type: ignore[no-untyped-def]
    no_caps: None, smtp_sink, settings
) -> None:
    settings.CAMPAIGNS = {"SITE_URL": "https://growth.example.com/", "UNSUBSCRIBE_MAILTO": "unsub@example.com"}
    people = customers(2)
    Customer.objects.filter(pk=people[1].pk).update(locale="zh-CN")
    row = campaign(
        contents={"email": {"subject": "Hi", "text": "Code {{ coupon.code }}", "html": "<p>{{ coupon.code }}</p>"}}
    )
    run_broadcast(row)
    assert send_pending(row).sent == 2
    by_to = {_parsed(raw)["To"]: _parsed(raw) for raw in smtp_sink.messages}
    for person in people:
        message = by_to[person.email]
        assert not message.defects and all(not part.defects for part in message.walk())
        header = str(message["List-Unsubscribe"])
        url = re.search(r"<(https://[^>]+)>", header).group(1)  # type: ignore[union-attr]
        assert url.startswith("https://growth.example.com/u/")
        assert "<mailto:unsub@example.com?subject=unsubscribe>" in header
        assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
        assert consent.token_read(url.rsplit("/", 1)[1]).customer_id == person.pk
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert url in text and f'href="{url}"' in html
    assert "退订" in by_to[people[1].email].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # A transactional message carries neither the headers nor the footer.
    receipt = campaign(key="receipt", is_transactional=True, contents={"email": {"subject": "R", "text": "Thanks"}})
    run_broadcast(receipt)
    smtp_sink.messages.clear()
    assert send_pending(receipt).sent == 2
    for raw in smtp_sink.messages:
        assert _parsed(raw)["List-Unsubscribe"] is None
        assert _parsed(raw).get_body(("plain",)).get_content().strip() == "Thanks"  # type: ignore[union-attr]


def test_delivered_email__template_names_the_link__no_second_footer(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    customers(1)
    row = campaign(contents={"email": {"subject": "Hi", "text": "Stop: {{ unsubscribe_url }}"}})
    run_broadcast(row)
    assert send_pending(row).sent == 1
    text = _parsed(smtp_sink.messages[0]).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert len(URL.findall(text)) == 1 and text.startswith("Stop: http")


def test_send__recipient_refused_550__address_suppressed_and_bounce_event(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    people = customers(3)
    smtp_sink.refuse[people[1].email] = "550 5.1.1 no such user"
    smtp_sink.refuse[people[2].email] = "451 4.7.1 try later"
    row = campaign()
    run_broadcast(row)
    send_pending(row)
    rows = dict(Suppression.objects.values_list("address", "reason"))
    assert rows == {people[1].email: "hard_bounce"}  # a 4xx is not a bounce
    assert Event.objects.filter(event_type__code="bounce", customer=people[1]).count() == 1
    # The next campaign does not write to the address again.
    again = campaign(key="again")
    run_broadcast(again)
    send_pending(again)
    assert Delivery.objects.get(campaign=again, customer=people[1]).reason == "suppressed"


def test_sms__marketing_text__carries_the_opt_out_text(no_caps: None, http_provider) -> None:  # type: ignore[no-untyped-def]
    CustomerFactory(email="", phone="+33612345678", sms_consent_at=timezone.now())
    row = campaign(key="sms", channels=("sms",))
    run_broadcast(row)
    assert send_pending(row).sent == 1
    key = Delivery.objects.get(campaign=row).key
    assert http_provider.attempts(key)[0]["body"]["text"].endswith("\nReply STOP to opt out.")


def test_campaign_launch__with_experiment__guardrail_metrics_added_once(no_caps: None) -> None:
    from experiments import services as experiment_services
    from experiments.models import Metric

    experiment = experiment_services.experiment_start(
        experiment=experiment_services.experiment_create(
            key="guard",
            name="guard",
            variants=[
                experiment_services.VariantSpec(key="control", name="C", weight=Decimal("0.5"), is_control=True),
                experiment_services.VariantSpec(key="offer", name="O", weight=Decimal("0.5")),
            ],
            metrics=[experiment_services.MetricSpec(event_type_code="unsubscribe", role="guardrail")],
        )
    )
    customers(3)  # a broadcast to nobody is refused at launch (issue 16)
    row = campaign(experiment=experiment, treatment={"variant_key": "offer"})
    lifecycle.campaign_launch(campaign=row)
    lifecycle.campaign_pause(campaign=row)
    guardrails = Metric.objects.filter(experiment=experiment, role="guardrail")
    assert sorted(guardrails.values_list("event_type__code", flat=True)) == ["bounce", "complaint", "unsubscribe"]
