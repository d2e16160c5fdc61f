"""Triggered campaigns (events, layer entry) and referral rewards."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from campaigns.models import Campaign, Coupon, Referral, ReferralAudit, ReferralCode, Treatment
from campaigns.services import lifecycle
from campaigns.services.referrals import referral_code_get_or_create
from campaigns.services.triggers import campaign_triggers_process
from campaigns.tasks import tick_run
from segments.models import EventType, Layer, LayerHistory
from tests.campaigns.builders import campaign
from tests.factories import CustomerFactory, EventFactory

pytestmark = pytest.mark.django_db


def _type(code: str) -> EventType:
    return EventType.objects.get(code=code)


def test_new_user__signup_within_hours__starter_offer_once(no_caps: None) -> None:
    row = campaign(
        key="welcome", kind="new_user", trigger="event", trigger_event_type=_type("signup"), trigger_within_hours=24
    )
    old = CustomerFactory()
    EventFactory(customer=old, event_type=_type("signup"), occurred_at=timezone.now() - dt.timedelta(days=3))
    lifecycle.campaign_launch(campaign=row)
    fresh, late = CustomerFactory(), CustomerFactory()
    EventFactory(customer=fresh, event_type=_type("signup"), occurred_at=timezone.now())
    EventFactory(customer=late, event_type=_type("signup"), occurred_at=timezone.now() - dt.timedelta(hours=30))
    EventFactory(customer=fresh, event_type=_type("login"))
    # Events received in the last 24 hours are read; only signups at most 24 hours old fire.
    assert campaign_triggers_process(campaign_id=row.pk) == 3
    assert list(row.recipients.values_list("customer_id", "step")) == [(fresh.pk, "trigger")]
    # A duplicate signup event and a re-run change nothing.
    EventFactory(customer=fresh, event_type=_type("signup"), occurred_at=timezone.now())
    campaign_triggers_process(campaign_id=row.pk)
    assert campaign_triggers_process(campaign_id=row.pk) == 0
    assert row.recipients.count() == 1 and Coupon.objects.filter(campaign=row).count() == 1


def test_layer_entry__churn_warning__recall_per_entry(no_caps: None) -> None:
    churn = Layer.objects.get(dimension__key="lifecycle", key="churn_warning")
    row = campaign(key="recall", kind="winback", trigger="layer_entry", trigger_layer=churn)
    lifecycle.campaign_launch(campaign=row)
    person = CustomerFactory()
    entry = LayerHistory.objects.create(
        customer=person, dimension=churn.dimension, layer=churn, entered_at=timezone.now()
    )
    campaign_triggers_process(campaign_id=row.pk)
    assert list(row.recipients.values_list("customer_id", "step")) == [(person.pk, f"entry:{entry.pk}")]


def _referral_campaign(**fields):  # type: ignore[no-untyped-def]
    row = campaign(
        key="refer",
        kind="referral",
        trigger="event",
        trigger_event_type=_type("referral_signup"),
        referral_qualifying_event_type=_type("order"),
        **fields,
    )
    invitee_gift = Treatment.objects.create(campaign=row, referral_role="invitee", offer=row.treatments.first().offer)
    invitee_gift.contents.create(channel="email", subject="Welcome", text="Your gift: {{ coupon.code }}")
    lifecycle.campaign_launch(campaign=row)
    return Campaign.objects.get(pk=row.pk)


def _referred(invitee, code: str):  # type: ignore[no-untyped-def]
    return EventFactory(customer=invitee, event_type=_type("referral_signup"), properties={"referral_code": code})


def test_referral__first_order__both_rewarded_exactly_once(no_caps: None) -> None:
    row = _referral_campaign()
    inviter, invitee = CustomerFactory(), CustomerFactory()
    code = referral_code_get_or_create(customer=inviter).code
    _referred(invitee, code.lower())
    campaign_triggers_process(campaign_id=row.pk)
    referral = Referral.objects.get(invitee=invitee)
    assert (referral.inviter_id, referral.status) == (inviter.pk, "attributed")
    order = EventFactory(customer=invitee, event_type=_type("order"), amount=10, currency="EUR")
    EventFactory(customer=invitee, event_type=_type("order"), amount=12, currency="EUR")
    campaign_triggers_process(campaign_id=row.pk)
    campaign_triggers_process(campaign_id=row.pk)
    referral.refresh_from_db()
    assert (referral.status, referral.qualifying_event_id) == ("rewarded", order.pk)
    steps = dict(row.recipients.values_list("customer_id", "step"))
    assert steps == {inviter.pk: f"referral:{referral.pk}:inviter", invitee.pk: f"referral:{referral.pk}:invitee"}
    assert Coupon.objects.filter(campaign=row).count() == 2
    assert ReferralCode.objects.get(customer=inviter).rewarded_count == 1


def test_referral__self_unknown_and_second_code__refused_and_audited(no_caps: None) -> None:
    row = _referral_campaign()
    inviter, other, invitee = CustomerFactory(), CustomerFactory(), CustomerFactory()
    own = referral_code_get_or_create(customer=inviter).code
    _referred(inviter, own)  # self-referral
    _referred(invitee, "RNOPE")  # unknown
    _referred(invitee, own)  # attributed
    _referred(invitee, referral_code_get_or_create(customer=other).code)  # already referred
    campaign_triggers_process(campaign_id=row.pk)
    actions = sorted(ReferralAudit.objects.filter(campaign=row).values_list("action", flat=True))
    assert actions == ["attributed", "rejected_already_referred", "rejected_self_referral", "rejected_unknown_code"]
    assert list(Referral.objects.values_list("inviter_id", "invitee_id")) == [(inviter.pk, invitee.pk)]


def test_referral__cap_per_inviter__inviter_not_rewarded_past_cap(no_caps: None) -> None:
    row = _referral_campaign(referral_cap_per_inviter=1)
    inviter = CustomerFactory()
    code = referral_code_get_or_create(customer=inviter).code
    invitees = [CustomerFactory(), CustomerFactory()]
    for invitee in invitees:
        _referred(invitee, code)
    campaign_triggers_process(campaign_id=row.pk)
    for invitee in invitees:
        EventFactory(customer=invitee, event_type=_type("order"), amount=10, currency="EUR")
    campaign_triggers_process(campaign_id=row.pk)
    inviter_rewards = row.recipients.filter(customer=inviter).count()
    invitee_rewards = row.recipients.filter(customer__in=invitees).count()
    assert (inviter_rewards, invitee_rewards) == (1, 2)
    assert ReferralAudit.objects.filter(action="inviter_cap_reached").count() == 1
    assert set(Referral.objects.values_list("reason", flat=True)) == {"", "inviter_cap_reached"}


def test_tick__scheduled_broadcast_due__started_and_resolved(no_caps: None) -> None:
    CustomerFactory()
    row = campaign(key="sched")
    lifecycle.campaign_schedule(campaign=row, send_at=timezone.now() + dt.timedelta(minutes=5))
    assert tick_run()["started"] == 0
    result = tick_run(now=timezone.now() + dt.timedelta(minutes=6))
    row.refresh_from_db()
    assert result["started"] == 1 and row.status == "running"
    # The launch published the audience resolution; a later tick republishes it only if it
    # is still unresolved after the grace period (e.g. the broker lost it).
    assert lifecycle.campaigns_unresolved() == []
    assert lifecycle.campaigns_unresolved(now=timezone.now() + dt.timedelta(minutes=10)) == [row.pk]
    assert lifecycle.campaign_audience_resolve(campaign_id=row.pk) == 1
    assert lifecycle.campaigns_unresolved(now=timezone.now() + dt.timedelta(minutes=10)) == []


def test_beat_schedule__migration__tick_every_ten_seconds() -> None:
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="campaigns.tick")
    assert task.enabled and (task.interval.every, task.interval.period) == (10, "seconds")
