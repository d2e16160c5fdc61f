"""The synthetic business generator: deterministic, coherent, and loadable by the import commands."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections import defaultdict
from pathlib import Path

import pytest
from django.core.management import call_command

from demo import configure, generator
from demo.generator import (
    CHANNELS,
    EXPIRY_WINDOWS,
    INVITE_AFTER_ORDER_SHARE,
    SELLER_SHARE,
    DemoSpec,
    customer_story,
    generate,
)
from segments.models import Customer, CustomerRole, Event, Membership

END = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
SPEC = DemoSpec(customers=400, seed=11, months=18, end=END)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts)


def events_by_customer(folder: Path) -> dict[str, list[dict]]:
    """The generated events per customer, in file (= time) order."""
    by_customer: dict[str, list[dict]] = defaultdict(list)
    for line in (folder / "events.jsonl").open():
        event = json.loads(line)
        by_customer[event["customer_id"]].append(event)
    return by_customer


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate(SPEC, out, progress=False)
    return out


@pytest.mark.pure
def test_generate__same_spec__identical_files_other_seed_differs(generated: Path, tmp_path: Path) -> None:
    generate(SPEC, tmp_path / "again", progress=False)
    generate(DemoSpec(customers=400, seed=12, months=18, end=END), tmp_path / "other", progress=False)
    assert digest(tmp_path / "again") == digest(generated)
    assert digest(tmp_path / "other")["events.jsonl"] != digest(generated)["events.jsonl"]


@pytest.mark.pure
def test_customer_story__alone__same_as_in_the_whole_file(generated: Path) -> None:
    # Each customer has its own random stream: one can be generated without the others.
    story = customer_story(SPEC, 42)
    rows = list(csv.DictReader((generated / "customers.csv").open()))
    assert rows[42] == story.customer
    events = [json.loads(line) for line in (generated / "events.jsonl").open()]
    assert [e for e in events if e["customer_id"] == "cust-000042"] == story.events


@pytest.mark.pure
def test_generate__customers__signups_in_period_contacts_valid(generated: Path) -> None:
    rows = list(csv.DictReader((generated / "customers.csv").open()))
    assert len(rows) == 400
    signups = [parse(r["signed_up_at"]) for r in rows]
    assert all(SPEC.start <= s < END for s in signups)
    assert signups == sorted(signups)  # referrers always signed up before those they referred
    assert len({r["timezone"] for r in rows}) >= 6 and len({r["locale"] for r in rows}) >= 6
    phones = [r["phone"] for r in rows if r["phone"]]
    assert phones and all(p.startswith("+") and p[1:].isdigit() and 8 <= len(p) <= 16 for p in phones)
    consented = [r for r in rows if r["email_consent_at"]]
    assert consented and any(r["email_opt_out_at"] for r in consented)


@pytest.mark.pure
def test_generate__events__ordered_in_period_referrals_point_back(generated: Path) -> None:
    signup_of = {
        r["external_id"]: parse(r["signed_up_at"]) for r in csv.DictReader((generated / "customers.csv").open())
    }
    revenue: dict[str, float] = defaultdict(float)
    referrals = 0
    for line in (generated / "events.jsonl").open():
        event = json.loads(line)
        occurred = parse(event["occurred_at"])
        assert signup_of[event["customer_id"]] - dt.timedelta(hours=1) <= occurred <= END
        if event["type"] == "referral_signup":
            referrals += 1
            referrer = event["properties"]["referrer_id"]
            assert signup_of[referrer] < signup_of[event["customer_id"]]
        if event["type"] == "order":
            assert float(event["amount"]) > 0 and len(event["currency"]) == 3
            revenue[event["customer_id"]] += float(event["amount"]) if event["currency"] == "EUR" else 0.0
    assert referrals >= 10
    # Skewed value: the top fifth of buyers brings at least half the revenue.
    totals = sorted(revenue.values(), reverse=True)
    assert sum(totals[: len(totals) // 5]) >= 0.5 * sum(totals)


@pytest.mark.pure
def test_generate__memberships__every_expiry_window_populated(generated: Path) -> None:
    latest: dict[str, dt.datetime] = {}
    for line in (generated / "memberships.jsonl").open():
        term = json.loads(line)
        assert parse(term["expires_at"]) > parse(term["started_at"])
        latest[term["customer_id"]] = max(latest.get(term["customer_id"], END - dt.timedelta(days=9999)),
                                          parse(term["expires_at"]))  # fmt: skip
    days = [(expiry - END).total_seconds() / 86400 for expiry in latest.values()]
    for low, high in EXPIRY_WINDOWS:
        assert any(low <= d <= high + 1 for d in days), (low, high)


@pytest.mark.pure
def test_generate__roles__everyone_buys_a_share_also_sells_and_only_sellers_have_sales(generated: Path) -> None:
    rows = list(csv.DictReader((generated / "customers.csv").open()))
    roles = {r["external_id"]: r["roles"].split(",") for r in rows}
    assert all(r[0] == "buyer" and set(r) <= {"buyer", "seller"} for r in roles.values())
    sellers = {ext for ext, r in roles.items() if "seller" in r}
    # 8% of 400 = 32 expected; binomial sd 5.4
    assert abs(len(sellers) - SELLER_SHARE * 400) <= 16, len(sellers)
    sales: dict[str, list[float]] = defaultdict(list)
    for line in (generated / "events.jsonl").open():
        event = json.loads(line)
        if event["type"] == "sale":
            assert float(event["amount"]) > 0 and len(event["currency"]) == 3 and event["properties"]["product"]
            sales[event["customer_id"]].append(float(event["amount"]))
    assert set(sales) <= sellers and len(sales) >= len(sellers) // 2
    # ... and a few sellers make most of the sales (log-normal rates): the top fifth of sellers
    # by count hold at least 40% of the sales
    counts = sorted((len(v) for v in sales.values()), reverse=True)
    assert sum(counts[: max(1, len(counts) // 5)]) >= 0.4 * sum(counts), counts


@pytest.mark.pure
def test_generate__path_to_purchase__product_view_before_every_order_and_some_carts_left(generated: Path) -> None:
    by_customer = events_by_customer(generated)
    orders = carts = 0
    for events in by_customer.values():
        for i, event in enumerate(events):
            if event["type"] != "order":
                continue
            orders += 1
            # a product page view of the ordered product within the two hours before the order
            at = parse(event["occurred_at"])
            assert any(
                e["type"] == "visit"
                and e["properties"].get("page") == "product"
                and e["properties"].get("sku") == event["properties"]["sku"]
                and dt.timedelta(minutes=55) <= at - parse(e["occurred_at"]) <= dt.timedelta(minutes=120)
                for e in events[:i]
            ), event
        carts += sum(e["type"] == "add_to_cart" for e in events)
    # Then: more carts than orders (some are left behind), so "decision -> done" is below 100%
    assert orders > 100 and 1.2 * orders < carts < 2.5 * orders, (orders, carts)


@pytest.mark.pure
def test_generate__referral_invites__sent_by_inviters_after_their_orders(generated: Path) -> None:
    # Given: the events per customer, in time order
    by_customer = events_by_customer(generated)
    orders = invites = 0
    for events in by_customer.values():
        order_times = [parse(e["occurred_at"]) for e in events if e["type"] == "order"]
        orders += len(order_times)
        for event in (e for e in events if e["type"] == "referral_invite_sent"):
            invites += 1
            # Then: every invitation is the inviter's, 15 minutes to 2 days after one of their orders
            at = parse(event["occurred_at"])
            assert any(dt.timedelta(minutes=15) <= at - o <= dt.timedelta(hours=48) for o in order_times), event
            assert event["properties"]["via"] in {"link", "email", "sms"} and at < END
    # ... after about INVITE_AFTER_ORDER_SHARE of the orders (15% of several thousand: +-4 SE)
    assert orders > 1000, orders
    se = (INVITE_AFTER_ORDER_SHARE * (1 - INVITE_AFTER_ORDER_SHARE) / orders) ** 0.5
    assert abs(invites / orders - INVITE_AFTER_ORDER_SHARE) < 4 * se + 0.01, (invites, orders)


@pytest.mark.pure
def test_customer_story__referral_stream__adds_invites_and_changes_no_other_draw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: the stories with the inviter's stream, then without it
    with_invites = [customer_story(SPEC, i) for i in range(0, 400, 7)]
    monkeypatch.setattr(generator, "_referral_side", lambda *args, **kwargs: None)
    without = [customer_story(SPEC, i) for i in range(0, 400, 7)]

    # Then: the invitations are the only difference (own random stream, drawn last: every
    # other event keeps its values and ids, so the demo's planted effects are unchanged)
    invites = 0
    for a, b in zip(with_invites, without, strict=True):
        kept = [e for e in a.events if e["type"] != "referral_invite_sent"]
        invites += len(a.events) - len(kept)
        assert kept == b.events and a.customer == b.customer and a.memberships == b.memberships
    assert invites > 0


@pytest.mark.pure
def test_customer_story__acquisition_channel__paid_and_social_bring_more_dormant_customers() -> None:
    # Given 4,000 customers' attributes
    spec = DemoSpec(customers=4000, seed=3, months=18, end=END)
    by_channel: dict[str, list[str]] = defaultdict(list)
    tiers: dict[int, list[str]] = defaultdict(list)
    for index in range(spec.customers):
        attributes = json.loads(customer_story(spec, index).customer["attributes"])
        by_channel[attributes["channel"]].append(attributes["persona"])
        tiers[attributes["city_tier"]].append(attributes["persona"])

    def dormant(personas: list[str]) -> float:
        return personas.count("dormant") / len(personas)

    # Then: every channel is used, and the dormant share (30% overall) is higher among
    # paid-search and social sign-ups than among email and partner ones (planted: 28+28 of
    # 100 vs 5+6; the expected shares are about 40% against 13%)
    assert set(by_channel) == {*CHANNELS, "referral"}
    paid = by_channel["paid_search"] + by_channel["social"]
    owned = by_channel["email"] + by_channel["partner"]
    assert dormant(paid) > dormant(owned) + 0.15, (dormant(paid), dormant(owned))
    # ... and tier-1 cities hold a larger share of VIPs than tier-4 ones
    assert tiers[1].count("vip") / len(tiers[1]) > 1.5 * tiers[4].count("vip") / len(tiers[4])


@pytest.mark.django_db
def test_generated_files__import_commands__load_cleanly_and_rerun_stores_nothing(tmp_path: Path) -> None:
    spec = DemoSpec(customers=60, seed=5, end=END)
    summary = generate(spec, tmp_path, progress=False)
    configure.marketplace_event_types_ensure()  # the sellers' "sale" type, as run_demo does first
    for _ in range(2):
        for command, name in [("import_customers", "customers.csv"), ("import_memberships", "memberships.jsonl"),
                              ("import_events", "events.jsonl")]:  # fmt: skip
            call_command(command, str(tmp_path / name), "--no-progress", stdout=io.StringIO(), stderr=io.StringIO())
    assert Customer.objects.count() == summary.customers == 60
    assert Event.objects.count() == summary.events
    assert Membership.objects.count() == summary.memberships
    # ... with the roles of the CSV: everyone a buyer, the sellers also sellers
    sellers = {r["external_id"] for r in csv.DictReader((tmp_path / "customers.csv").open()) if "seller" in r["roles"]}
    assert CustomerRole.objects.filter(role__key="buyer").count() == 60
    assert (
        set(CustomerRole.objects.filter(role__key="seller").values_list("customer__external_id", flat=True)) == sellers
    )


@pytest.mark.pure
def test_generate_demo_data_command__writes_the_three_files(tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("generate_demo_data", "--customers", "20", "--seed", "1", "--end", "2025-06-01",
                 "--out", str(tmp_path), stdout=out)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customers.csv", "events.jsonl", "memberships.jsonl"]
    assert "20 customers" in out.getvalue()
