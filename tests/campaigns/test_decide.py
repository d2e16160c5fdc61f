"""Decisions: intent to treat, treatments by variant and layer, consent, quiet hours, caps,
coupons, renewals — all through the services, on the database of the pass."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db.models import Count
from django.utils import timezone

from campaigns.models import ChannelPolicy, Coupon, Delivery, Offer, Recipient, Treatment
from campaigns.services.decide import Target, recipients_decide
from experiments import services as experiment_services
from segments.models import CustomerLayer, Dimension, Layer
from tests.campaigns.builders import campaign, customers, run_broadcast
from tests.factories import CustomerFactory, MembershipFactory

pytestmark = pytest.mark.django_db


def test_broadcast__no_experiment__everyone_treated_with_pending_delivery_and_coupon(no_caps: None) -> None:
    people = customers(5)
    ends = timezone.now() + dt.timedelta(days=3)
    row = campaign(ends_at=ends)
    run_broadcast(row)
    assert Recipient.objects.filter(campaign=row, outcome="treated").count() == 5
    assert Delivery.objects.filter(campaign=row, status="pending").count() == 5
    coupons = Coupon.objects.filter(campaign=row)
    assert sorted(coupons.values_list("customer_id", flat=True)) == [c.pk for c in people]
    # Validity 14 days, campaign ends in 3: the coupon expires with the campaign.
    assert {c.expires_at for c in coupons} == {ends}


def test_recipients_decide__run_twice__no_duplicate_rows(no_caps: None) -> None:
    people = customers(3)
    row = campaign()
    targets = [Target(c.pk, "broadcast") for c in people]
    first = recipients_decide(campaign=row, targets=targets)
    second = recipients_decide(campaign=row, targets=targets)
    assert first.recipients == 3 and second.recipients == 0
    assert Delivery.objects.filter(campaign=row).count() == 3
    assert Coupon.objects.filter(campaign=row).count() == 3


def test_recipients_decide__some_already_decided__only_new_pairs_decided(no_caps: None) -> None:
    people = customers(4)
    row = campaign()
    other = campaign(key="other-campaign")
    recipients_decide(campaign=row, targets=[Target(c.pk, "broadcast") for c in people[:2]])
    recipients_decide(campaign=other, targets=[Target(people[2].pk, "broadcast")])  # another campaign's decision

    again = recipients_decide(
        campaign=row,
        targets=[Target(c.pk, "broadcast") for c in people] + [Target(people[0].pk, "reminder")],
    )

    assert again.recipients == 3  # people[2] and people[3] for "broadcast", people[0] for "reminder"
    assert sorted(Recipient.objects.filter(campaign=row).values_list("customer_id", "step")) == sorted(
        [(c.pk, "broadcast") for c in people] + [(people[0].pk, "reminder")]
    )


def test_recipients_decide__fails_after_recipients_written__nothing_kept(no_caps: None, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from campaigns.services import decide

    def broken(**kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("coupon pool unavailable")

    monkeypatch.setattr(decide, "_issue_coupons", broken)
    row = campaign()
    with pytest.raises(RuntimeError):
        recipients_decide(campaign=row, targets=[Target(c.pk, "broadcast") for c in customers(3)])
    # One transaction: the recipients written before the failure are rolled back with it.
    assert not Recipient.objects.filter(campaign=row).exists()
    assert not Delivery.objects.filter(campaign=row).exists()


def test_channels__no_consent_or_contact__suppressed_with_reason(no_caps: None) -> None:
    consenting = CustomerFactory()
    opted_out = CustomerFactory(email_opt_out_at=timezone.now())
    no_email = CustomerFactory(email="")
    row = campaign()
    recipients_decide(campaign=row, targets=[Target(c.pk, "broadcast") for c in (consenting, opted_out, no_email)])
    reasons = dict(Delivery.objects.filter(campaign=row).values_list("customer_id", "reason"))
    assert reasons == {consenting.pk: "", opted_out.pk: "no_consent", no_email.pk: "no_contact"}
    # Nobody will hear of the suppressed customers' coupons: they are withdrawn.
    assert list(Coupon.objects.filter(campaign=row).values_list("customer_id", flat=True)) == [consenting.pk]


def test_channels__first_reachable__falls_back_to_sms(no_caps: None) -> None:
    now = timezone.now()
    sms_only = CustomerFactory(email_consent_at=None, phone="+33612345678", sms_consent_at=now)
    both = CustomerFactory(phone="+33612345679", sms_consent_at=now)
    row = campaign(channels=("email", "sms"), channel_strategy="first_reachable")
    recipients_decide(campaign=row, targets=[Target(sms_only.pk, "broadcast"), Target(both.pk, "broadcast")])
    channels = dict(Delivery.objects.filter(campaign=row, status="pending").values_list("customer_id", "channel"))
    assert channels == {sms_only.pk: "sms", both.pk: "email"}


def test_channels__all_strategy__one_row_per_reachable_channel(no_caps: None) -> None:
    now = timezone.now()
    person = CustomerFactory(phone="+33612345678", sms_consent_at=now)
    row = campaign(channels=("email", "sms", "in_app"), channel_strategy="all")
    recipients_decide(campaign=row, targets=[Target(person.pk, "broadcast")])
    statuses = dict(Delivery.objects.filter(campaign=row).values_list("channel", "status"))
    assert statuses == {"email": "pending", "sms": "pending", "in_app": "sent"}


def test_quiet_hours__customer_local_night__held_until_window_opens(no_caps: None) -> None:
    ChannelPolicy.objects.filter(channel="email").update(quiet_start=dt.time(21), quiet_end=dt.time(8))
    person = CustomerFactory(timezone="Asia/Tokyo")
    row = campaign()
    at = dt.datetime(2026, 3, 2, 14, 0, tzinfo=dt.UTC)  # 23:00 in Tokyo
    recipients_decide(campaign=row, targets=[Target(person.pk, "broadcast")], now=at)
    delivery = Delivery.objects.get(campaign=row)
    assert (delivery.status, delivery.reason) == ("held", "quiet_hours")
    assert delivery.not_before == dt.datetime(2026, 3, 2, 23, 0, tzinfo=dt.UTC)  # 08:00 Tokyo


def test_caps__second_campaign_same_local_day__capped_and_offer_withdrawn(no_caps: None) -> None:
    ChannelPolicy.objects.filter(channel="email").update(daily_cap=1)
    person = CustomerFactory(timezone="America/New_York")
    first, second = campaign(key="first"), campaign(key="second")
    at = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)
    recipients_decide(campaign=first, targets=[Target(person.pk, "broadcast")], now=at)
    recipients_decide(campaign=second, targets=[Target(person.pk, "broadcast")], now=at + dt.timedelta(hours=5))
    assert Delivery.objects.get(campaign=first).status == "pending"
    capped = Delivery.objects.get(campaign=second)
    assert (capped.status, capped.reason) == ("suppressed", "capped")
    assert not Coupon.objects.filter(campaign=second).exists()
    # 04:00 UTC on the 3rd is still the 2nd in New York: capped again; the 3rd local is free.
    third = campaign(key="third")
    recipients_decide(campaign=third, targets=[Target(person.pk, "broadcast")], now=at + dt.timedelta(hours=13))
    assert Delivery.objects.get(campaign=third).reason == "capped"
    fourth = campaign(key="fourth")
    recipients_decide(campaign=fourth, targets=[Target(person.pk, "broadcast")], now=at + dt.timedelta(hours=18))
    assert Delivery.objects.get(campaign=fourth).status == "pending"


def test_caps__transactional_campaign__exempt(no_caps: None) -> None:
    ChannelPolicy.objects.filter(channel="email").update(daily_cap=1, quiet_start=dt.time(0), quiet_end=dt.time(23, 59))
    person = CustomerFactory()
    marketing, receipt = campaign(key="marketing"), campaign(key="receipt", is_transactional=True)
    at = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
    recipients_decide(campaign=marketing, targets=[Target(person.pk, "broadcast")], now=at)
    recipients_decide(campaign=receipt, targets=[Target(person.pk, "broadcast")], now=at)
    assert Delivery.objects.get(campaign=marketing).status == "held"
    assert Delivery.objects.get(campaign=receipt).status == "pending"


def _experiment(key: str, *, holdout_percent: int | None = None, control_weight: str = "0.5"):  # type: ignore[no-untyped-def]
    holdout = None
    if holdout_percent is not None:
        holdout = experiment_services.holdout_create(key=f"{key}-h", name="Holdout", percent=Decimal(holdout_percent))
    experiment = experiment_services.experiment_create(
        key=key,
        name=key,
        variants=[
            experiment_services.VariantSpec(
                key="control", name="Control", weight=Decimal(control_weight), is_control=True
            ),
            experiment_services.VariantSpec(key="offer", name="Offer", weight=1 - Decimal(control_weight)),
        ],
        targeting=experiment_services.Targeting(holdout_id=holdout.pk if holdout else None),
    )
    return experiment_services.experiment_start(experiment=experiment)


def test_experiment__control_and_holdout__recorded_would_have_sent_rows(no_caps: None) -> None:
    people = customers(200)
    experiment = _experiment("split", holdout_percent=20)
    row = campaign(experiment=experiment)
    run_broadcast(row)
    outcomes = dict(Recipient.objects.filter(campaign=row).values_list("outcome").annotate(n=Count("pk")))
    # Everyone in the audience is recorded: intent to treat.
    assert sum(outcomes.values()) == len(people)
    assert outcomes["holdout"] > 10 and outcomes["control"] > 40 and outcomes["treated"] > 40
    deliveries = Delivery.objects.filter(campaign=row)
    assert deliveries.filter(status="suppressed", reason="control").count() == outcomes["control"]
    assert deliveries.filter(status="suppressed", reason="holdout").count() == outcomes["holdout"]
    assert deliveries.filter(status="pending").count() == outcomes["treated"]
    # Control customers got no coupon; treated ones did.
    control_ids = Recipient.objects.filter(campaign=row, outcome="control").values_list("customer_id", flat=True)
    assert not Coupon.objects.filter(campaign=row, customer_id__in=control_ids).exists()
    assert Coupon.objects.filter(campaign=row).count() == outcomes["treated"]


def test_experiment__control_with_baseline_treatment__sent_baseline_offer(no_caps: None) -> None:
    customers(60)
    experiment = _experiment("baseline")
    row = campaign(experiment=experiment)
    baseline = Offer.objects.create(key="base", name="Five", benefit_kind="percent_off", value=5)
    treatment = Treatment.objects.create(campaign=row, variant_key="control", offer=baseline)
    treatment.contents.create(channel="email", subject="Hi", text="{{ offer.benefit }} {{ coupon.code }}")
    run_broadcast(row)
    control = Recipient.objects.filter(campaign=row, variant_key="control")
    assert control.exists() and set(control.values_list("outcome", "offer_id").distinct()) == {("treated", baseline.pk)}
    treated = Recipient.objects.filter(campaign=row, variant_key="offer")
    assert treated.exclude(offer=baseline).count() == treated.count()


def _expiry_dimension() -> tuple[Dimension, Layer, Layer]:
    """The segments engine's built-in expiry-window dimension (its layers are placed by the
    recompute; here rows are written directly to pin who is where)."""
    dimension = Dimension.objects.get(key="expiry")
    return dimension, dimension.layers.get(key="expiring_soon"), dimension.layers.get(key="expired_recently")


def test_renewal__per_window_treatment_and_one_offer_per_term_window(no_caps: None) -> None:
    dimension, soon, lapsed = _expiry_dimension()
    expiring, expired = CustomerFactory(), CustomerFactory()
    term = MembershipFactory(customer=expiring, expires_at=timezone.now() + dt.timedelta(days=30))
    MembershipFactory(customer=expired, expires_at=timezone.now() - dt.timedelta(days=20))
    CustomerLayer.objects.create(customer=expiring, dimension=dimension, layer=soon)
    CustomerLayer.objects.create(customer=expired, dimension=dimension, layer=lapsed)
    renew = Offer.objects.create(
        key="renew", name="Renew", benefit_kind="amount_off", value=20, currency="EUR", expires_after_membership_days=7
    )
    comeback = Offer.objects.create(key="back", name="Come back", benefit_kind="free_period", value=30)
    row = campaign(key="renewal", kind="renewal", split_dimension=dimension, offer=renew, treatment={"layer": soon})
    t2 = Treatment.objects.create(campaign=row, layer=lapsed, offer=comeback)
    t2.contents.create(channel="email", subject="{{ layer.name }}", text="{{ offer.benefit }} {{ coupon.code }}")
    run_broadcast(row)
    offers = dict(Recipient.objects.filter(campaign=row).values_list("customer_id", "offer__key"))
    assert offers == {expiring.pk: "renew", expired.pk: "back"}
    coupon = Coupon.objects.get(customer=expiring)
    assert coupon.expires_at == term.expires_at + dt.timedelta(days=7)
    # A second renewal campaign for the same term and window is refused.
    again = campaign(key="renewal-2", kind="renewal", split_dimension=dimension, offer=renew, treatment={"layer": soon})
    run_broadcast(again)
    second = Recipient.objects.get(campaign=again, customer=expiring)
    assert (second.outcome, second.reason) == ("excluded", "renewal_already_offered")
    assert Recipient.objects.filter(membership=term).count() == 1


def test_pool_offer__pool_exhausted__suppressed_no_coupon(no_caps: None) -> None:
    from campaigns.services.offers import coupon_pool_upload

    pool = Offer.objects.create(key="pool", name="Pool", benefit_kind="points", value=100, code_source="pool")
    coupon_pool_upload(offer=pool, codes=["POOL-0001", "POOL-0002"])
    people = customers(3)
    row = campaign(offer=pool)
    recipients_decide(campaign=row, targets=[Target(c.pk, "broadcast") for c in people])
    assert Coupon.objects.filter(offer=pool, customer__isnull=False).count() == 2
    assert Delivery.objects.filter(campaign=row, reason="no_coupon").count() == 1
    assert Delivery.objects.filter(campaign=row, status="pending").count() == 2


def _decide_queries(n: int, key: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    people = customers(n, prefix=key)
    row = campaign(key=key)
    with CaptureQueriesContext(connection) as queries:
        result = recipients_decide(campaign=row, targets=[Target(c.pk, "broadcast") for c in people])
    assert result.recipients == n and Delivery.objects.filter(campaign=row, status="pending").count() == n
    return len(queries)


def test_recipients_decide__batch_size__same_number_of_statements(no_caps: None) -> None:
    # Set-based: reads and writes per batch, not per customer.
    assert _decide_queries(5, "small") == _decide_queries(300, "large")


def test_rows_insert__conflicts_skipped_defaults_filled__ids_returned(no_caps: None) -> None:
    from campaigns.models import CapSlot
    from campaigns.services import bulk

    person = CustomerFactory()
    day = dt.date(2026, 3, 2)
    fields = ("customer", "channel", "period", "period_start", "slot", "delivery")
    first = bulk.rows_insert(
        CapSlot, fields, [(person.pk, "email", "day", day, 1, 11), (person.pk, "email", "day", day, 2, 12)],
        returning=("delivery",), skip_conflicts=True,
    )  # fmt: skip
    again = bulk.rows_insert(
        CapSlot, fields, [(person.pk, "email", "day", day, 2, 13), (person.pk, "email", "day", day, 3, 14)],
        returning=("delivery",), skip_conflicts=True,
    )  # fmt: skip
    assert sorted(first) == [(11,), (12,)] and again == [(14,)]
    slots = CapSlot.objects.filter(customer=person).order_by("slot")
    assert [(s.slot, s.period_start, s.delivery_id) for s in slots] == [(1, day, 11), (2, day, 12), (3, day, 14)]
    assert all(s.created_at is not None for s in slots)  # the field's default, filled in


def test_rows_insert__constant_and_varying_columns__every_value_round_trips(no_caps: None) -> None:
    # Columns with one value for the whole batch travel as parameters, the rest in the JSON:
    # whichever way a value goes, it is stored the same.
    from campaigns.services import bulk
    from segments.models import Customer

    at = timezone.now().replace(microsecond=123456)
    fields = ("external_id", "attributes", "email_consent_at", "timezone", "locale", "updated_at")
    rows = [
        ("c1", {"tier": "gold", "n": [1, 2]}, at, "UTC", "en", at),  # attributes constant, consent varies
        ("c2", {"tier": "gold", "n": [1, 2]}, None, "UTC", "en", at),
        ("c3", {"tier": "gold", "n": [1, 2]}, at - dt.timedelta(days=1), "UTC", "en", at),
        ("c4", {}, at, "Asia/Shanghai", "fr", at),  # a single row: every column constant
    ]
    ids = bulk.rows_insert(Customer, fields, rows[:3], returning=("id", "external_id"))
    ids += bulk.rows_insert(Customer, fields, rows[3:], returning=("id", "external_id"))
    assert [external_id for _, external_id in ids] == ["c1", "c2", "c3", "c4"]
    stored = {
        c.external_id: (c.external_id, c.attributes, c.email_consent_at, c.timezone, c.locale, c.updated_at)
        for c in Customer.objects.filter(pk__in=[pk for pk, _ in ids])
    }
    assert [stored[row[0]] for row in rows] == rows
    assert all(c.created_at is not None for c in Customer.objects.filter(pk__in=[pk for pk, _ in ids]))


def test_generate_codes__many__unique_alphabet_and_prefix() -> None:
    from campaigns.services.decide import CODE_ALPHABET, generate_codes

    codes = generate_codes("SPR", 10, 5000)
    assert len(set(codes)) == 5000
    assert all(c.startswith("SPR") and len(c) == 13 and set(c[3:]) <= set(CODE_ALPHABET) for c in codes)
    assert set("".join(codes)[3:]) >= set(CODE_ALPHABET)  # every letter is used
