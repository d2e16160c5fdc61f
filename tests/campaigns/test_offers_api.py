"""The offer API, coupon redemption (API and service) and pool uploads."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from campaigns.models import ChannelPolicy, Coupon, Offer, Recipient
from campaigns.services import lifecycle
from campaigns.services.offers import CouponError, coupon_pool_upload, coupon_redeem
from segments.models import Event
from tests.campaigns.builders import campaign, customers, run_broadcast
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _issued_coupon() -> Coupon:
    person = CustomerFactory()
    row = campaign(key="redeem")
    run_broadcast(row)
    return Coupon.objects.get(customer=person, campaign=row)


def test_coupon_redeem__once__second_refused_and_event_written(no_caps: None) -> None:
    coupon = _issued_coupon()
    redeemed = coupon_redeem(code=coupon.code.lower(), customer=coupon.customer, reference="order-1")
    assert redeemed.redeemed_at is not None and redeemed.redemption_ref == "order-1"
    with pytest.raises(CouponError) as info:
        coupon_redeem(code=coupon.code, customer=coupon.customer)
    assert info.value.code == "already_redeemed"
    event = Event.objects.get(event_id=f"platform:coupon_redeemed:{coupon.code}")
    assert (event.customer_id, event.event_type.code, event.properties["campaign"]) == (
        coupon.customer_id,
        "coupon_redeemed",
        "redeem",
    )


def test_coupon_redeem__other_customers_code__not_found_and_untouched(no_caps: None) -> None:
    coupon = _issued_coupon()
    stranger = CustomerFactory()
    with pytest.raises(CouponError) as info:
        coupon_redeem(code=coupon.code, customer=stranger)
    assert info.value.code == "not_found"
    coupon.refresh_from_db()
    assert coupon.redeemed_at is None


def test_coupon_redeem__expired__refused(no_caps: None) -> None:
    coupon = _issued_coupon()
    Coupon.objects.filter(pk=coupon.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    with pytest.raises(CouponError) as info:
        coupon_redeem(code=coupon.code, customer=coupon.customer)
    assert info.value.code == "expired"


def test_coupon_pool_upload__duplicates_skipped_bad_code_named(no_caps: None) -> None:
    pool = Offer.objects.create(key="pool", name="Pool", benefit_kind="points", value=50, code_source="pool")
    assert coupon_pool_upload(offer=pool, codes=["AAAA-1", "aaaa-1", "BBBB-2", ""]) == (2, 1)
    assert coupon_pool_upload(offer=pool, codes=["BBBB-2", "CCCC-3"]) == (1, 1)
    with pytest.raises(ValidationError) as info:
        coupon_pool_upload(offer=pool, codes=["GOOD-1", "bad code!"])
    assert "Line 2" in info.value.message_dict["codes"][0]


def test_redeem_api__scopes_and_answers(no_caps: None, api_client_factory) -> None:  # type: ignore[no-untyped-def]
    coupon = _issued_coupon()
    url = f"/api/v1/coupons/{coupon.code}/redeem"
    body = {"customer_id": coupon.customer.external_id, "reference": "o-9"}
    assert api_client_factory("offers:read").post(url, body, format="json").status_code == 403
    client = api_client_factory("coupons:redeem")
    missing = client.post(url, {}, format="json")
    assert missing.status_code == 400 and "customer_id" in missing.json()["errors"]
    first = client.post(url, body, format="json")
    assert first.status_code == 200, first.content
    assert first.json()["code"] == coupon.code and first.json()["reference"] == "o-9"
    again = client.post(url, body, format="json")
    assert again.status_code == 409 and "already redeemed" in again.json()["detail"]
    other = CustomerFactory()
    assert client.post(url, {"customer_id": other.external_id}, format="json").status_code == 404
    assert client.post("/api/v1/coupons/NOPE-0000/redeem", body, format="json").status_code == 404


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_coupon_redeem__50_concurrent_attempts__exactly_one_succeeds(no_caps: None) -> None:
    coupon = _issued_coupon()
    barrier = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            coupon_redeem(code=coupon.code, customer=coupon.customer, reference=f"attempt-{i}")
            result = "ok"
        except CouponError as exc:
            result = exc.code
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 50
    assert outcomes.count("ok") == 1 and outcomes.count("already_redeemed") == 49
    assert Event.objects.filter(event_type__code="coupon_redeemed", customer=coupon.customer).count() == 1


def test_offers_api__treated_customer__offer_with_coupon_and_in_app_message(no_caps: None, api_client_factory) -> None:  # type: ignore[no-untyped-def]
    person = CustomerFactory()
    other = CustomerFactory()
    row = campaign(key="inapp", channels=("in_app", "email"), channel_strategy="all")
    run_broadcast(row)
    client = api_client_factory("offers:read")
    response = client.get(f"/api/v1/customers/{person.external_id}/offers")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 1
    (entry,) = body["results"]
    coupon = Coupon.objects.get(customer=person)
    assert entry["status"] == "offer" and entry["coupon_code"] == coupon.code
    assert entry["benefit"]["description"] == "10% off"
    assert entry["message"]["title"] == "Ten percent" and coupon.code in entry["message"]["body"]
    other_code = Coupon.objects.get(customer=other).code
    assert other_code not in response.content.decode()
    assert api_client_factory("coupons:redeem").get(f"/api/v1/customers/{person.external_id}/offers").status_code == 403
    assert client.get("/api/v1/customers/nobody/offers").status_code == 404


@pytest.mark.postgres
def test_offers_api__reads_deliveries_by_index__never_scans_the_outbox(no_caps: None, api_client_factory) -> None:  # type: ignore[no-untyped-def]
    # The outbox holds a row per message ever sent: the API's read of one customer's
    # deliveries must be an index lookup (here with sequential scans priced out, as a
    # table of millions of rows would price them).
    person = CustomerFactory()
    CustomerFactory()
    run_broadcast(campaign(key="indexed", channels=("in_app", "email"), channel_strategy="all"))
    seen: list[tuple[str, object]] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if "campaigns_delivery" in sql and sql.lstrip().upper().startswith("SELECT"):
            seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        response = api_client_factory("offers:read").get(f"/api/v1/customers/{person.external_id}/offers")
    assert response.status_code == 200 and response.json()["results"][0]["status"] == "offer"
    assert seen
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for sql, params in seen:
            cursor.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan on campaigns_delivery" not in plan, plan


def test_offers_api__reasons_when_none(no_caps: None, api_client_factory) -> None:  # type: ignore[no-untyped-def]
    ChannelPolicy.objects.filter(channel="email").update(daily_cap=1)
    capped = CustomerFactory()
    first = campaign(key="first")
    run_broadcast(first)
    second = campaign(key="second")
    run_broadcast(second)
    triggered = campaign(key="welcome", kind="new_user", trigger="event", trigger_event_type_id=_signup_type())
    lifecycle.campaign_launch(campaign=triggered)
    response = api_client_factory("offers:read").get(f"/api/v1/customers/{capped.external_id}/offers")
    reasons = {e["campaign"]["key"]: (e["status"], e["reason"]) for e in response.json()["results"]}
    assert reasons == {"first": ("offer", ""), "second": ("none", "capped"), "welcome": ("none", "not_triggered")}


def test_offers_api__joined_audience_after_launch__decided_on_first_request(no_caps: None, api_client_factory) -> None:  # type: ignore[no-untyped-def]
    customers(2)
    row = campaign(key="late")
    run_broadcast(row)
    newcomer = CustomerFactory()
    assert not Recipient.objects.filter(customer=newcomer).exists()
    entry = (
        api_client_factory("offers:read").get(f"/api/v1/customers/{newcomer.external_id}/offers").json()["results"][0]
    )
    assert entry["status"] == "offer" and entry["coupon_code"]
    assert Recipient.objects.filter(customer=newcomer, campaign=row, outcome="treated").count() == 1


def test_offers_api__control_and_holdout__say_so(no_caps: None, api_client_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.campaigns.test_decide import _experiment

    people = customers(120)
    row = campaign(key="split", experiment=_experiment("api-split", holdout_percent=20))
    run_broadcast(row)
    client = api_client_factory("offers:read")
    by_outcome = dict(Recipient.objects.filter(campaign=row).values_list("outcome", "customer__external_id"))
    assert {"control", "holdout", "treated"} <= set(by_outcome)
    for outcome, expected in (("control", "control"), ("holdout", "holdout")):
        entry = client.get(f"/api/v1/customers/{by_outcome[outcome]}/offers").json()["results"][0]
        assert (entry["status"], entry["reason"]) == ("none", expected)
    assert len(people) == 120


def test_referral_code_api__stable_code(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    person = CustomerFactory()
    client = api_client_factory("offers:read")
    first = client.get(f"/api/v1/customers/{person.external_id}/referral-code").json()
    second = client.get(f"/api/v1/customers/{person.external_id}/referral-code").json()
    assert first == second and first["code"].startswith("R")


def _signup_type() -> int:
    from segments.models import EventType

    return EventType.objects.get(code="signup").pk


def test_coupon_redeem__client_posted_the_old_redemption_id_first__still_redeems(api_client_factory, no_caps) -> None:  # type: ignore[no-untyped-def]
    # Redemptions used to take the id coupon_redeemed:<CODE>; a client that took it first
    # made every later redemption of that coupon fail (500). A client may still use that
    # id for its own event: the platform's ids live under "platform:".
    coupon = _issued_coupon()
    person = coupon.customer
    writer = api_client_factory("events:write")
    squat = writer.post(
        "/api/v1/events",
        {
            "event_id": f"coupon_redeemed:{coupon.code}",
            "customer_id": person.external_id,
            "type": "visit",
            "occurred_at": "2025-03-01T10:00:00Z",
        },
        format="json",
    )
    assert squat.status_code == 201

    redeemer = api_client_factory("coupons:redeem")
    response = redeemer.post(
        f"/api/v1/coupons/{coupon.code}/redeem", {"customer_id": person.external_id}, format="json"
    )
    assert response.status_code == 200, response.content
    coupon.refresh_from_db()
    assert coupon.redeemed_at is not None
    assert Event.objects.filter(event_type__code="coupon_redeemed", customer=person).count() == 1
