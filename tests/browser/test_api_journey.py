"""An API client with a key fetches a customer's offers and redeems the coupon, through the
local Swagger UI (/api/docs/): Authorize with the key, "Try it out" on the offers
operation, then on the redemption (twice: the second is refused). Every request the page
makes is checked to stay on loopback: the UI works without a CDN."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from access.services import api_key_create
from campaigns.models import Campaign, ChannelPolicy, Coupon
from segments.models import Event
from tests.campaigns.builders import campaign
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

OFFERS_PATH = "/api/v1/customers/{external_id}/offers"
REDEEM_PATH = "/api/v1/coupons/{code}/redeem"


def _operation(page, path: str, method: str):  # type: ignore[no-untyped-def]
    return page.locator(f".opblock-{method}").filter(has=page.locator(f".opblock-summary-path[data-path='{path}']"))


def _execute(operation) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    """Press Execute and read the live response's status and JSON body (a previous
    response is cleared first, so it cannot be mistaken for this one)."""
    response = operation.locator(".live-responses-table tbody tr.response")
    if operation.locator("button.btn-clear").count():
        operation.locator("button.btn-clear").click()
        expect(response).to_have_count(0)
    operation.locator("button.execute").click()
    expect(response).to_have_count(1)
    status = int(response.locator(".response-col_status").inner_text().strip())
    body = response.locator(".response-col_description pre.microlight").first.inner_text()
    return status, json.loads(body)


def test_api_client__offers_then_redeem_twice_in_swagger_ui__coupon_redeemed_once(app_server, page, screenshot) -> None:  # type: ignore[no-untyped-def]
    ChannelPolicy.objects.update(daily_cap=None, weekly_cap=None, quiet_start=None, quiet_end=None)
    customer = CustomerFactory(external_id="shopper-42")
    row = campaign(key="app-welcome", channels=("in_app",))
    Campaign.objects.filter(pk=row.pk).update(status=Campaign.Status.RUNNING, started_at=row.created_at)
    _, raw_key = api_key_create(name="shop frontend", scopes=["offers:read", "coupons:redeem"])

    outside: list[str] = []

    def loopback_only(route) -> None:  # type: ignore[no-untyped-def]
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", loopback_only)
    page.goto(f"{app_server}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Growth experimentation platform API")

    # Authorize with the key: the dialog lists the server key's scheme (apiKey) and the
    # customer token's (http bearer); the server key goes into the first.
    page.click(".swagger-ui .btn.authorize")
    key_box = page.locator(".auth-container").filter(has_text="apiKey")
    key_box.locator("input[type=text]").fill(f"Api-Key {raw_key}")
    key_box.locator(".auth-btn-wrapper .btn.modal-btn.auth.authorize").click()
    expect(key_box).to_contain_text("Authorized")
    key_box.locator(".auth-btn-wrapper .btn-done").click()

    # The customer's offers: assigned on first request, with a coupon and the in-app message.
    offers = _operation(page, OFFERS_PATH, "get")
    offers.locator(".opblock-summary").click()
    offers.locator("button.try-out__btn").click()
    offers.locator("input[placeholder='external_id']").fill(customer.external_id)
    status, body = _execute(offers)
    assert status == 200, body
    (answer,) = body["results"]
    assert (answer["campaign"]["key"], answer["status"]) == ("app-welcome", "offer")
    assert answer["benefit"]["description"] == "10% off"
    code = answer["coupon_code"]
    assert code and answer["coupon_redeemed"] is False
    assert answer["message"] == {"title": "Ten percent", "body": f"Code {code} until {answer['expires_at'][:10]}"}
    screenshot("offers")

    # Redeem the coupon; a second attempt is refused.
    redeem = _operation(page, REDEEM_PATH, "post")
    redeem.locator(".opblock-summary").click()
    redeem.locator("button.try-out__btn").click()
    redeem.locator("input[placeholder='code']").fill(code)
    redeem.locator("textarea.body-param__text").fill(
        json.dumps({"customer_id": customer.external_id, "reference": "order-1001"})
    )
    status, body = _execute(redeem)
    assert status == 200, body
    assert (body["code"], body["customer_id"], body["benefit"], body["reference"]) == (
        code,
        "shopper-42",
        "10% off",
        "order-1001",
    )
    screenshot("redeemed")
    status, body = _execute(redeem)
    assert status == 409 and body["detail"] == f"Coupon '{code}' was already redeemed."
    screenshot("redeemed-twice")

    coupon = Coupon.objects.get(code=code)
    assert coupon.customer_id == customer.pk and coupon.redeemed_at is not None
    assert Event.objects.filter(event_id=f"platform:coupon_redeemed:{code}", customer=customer).count() == 1
    assert outside == []
