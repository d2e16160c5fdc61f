"""experiments.reports.value_moments: value metrics' sufficient statistics from one GROUP BY,
on SQLite and PostgreSQL, against per-customer values worked out in Python."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from experiments.models import Assignment, Metric, MetricValue
from experiments.reports.value_moments import value_cells
from experiments.services.conversions import conversions_refresh
from experiments.stats import Moments
from segments.models import Event, EventType
from tests.experiments.report_builders import PHASE_START, Group, experiment_create, populate

pytestmark = pytest.mark.django_db

EXPOSED = PHASE_START + dt.timedelta(hours=1)  # report_builders: first exposure at day 0, 01:00


def _event(customer_id: int, code: str, at: dt.datetime, amount: str | None = None, currency: str = "EUR") -> Event:
    return Event(
        event_id=f"e-{customer_id}-{code}-{at.isoformat()}-{amount}",
        customer_id=customer_id,
        event_type=EventType.objects.get(code=code),
        occurred_at=at,
        amount=Decimal(amount) if amount is not None else None,
        currency=currency if amount is not None else "",
    )


def _metric(experiment, **fields) -> Metric:  # type: ignore[no-untyped-def]
    fields.setdefault("event_type", EventType.objects.get(code="order"))
    return Metric.objects.create(experiment=experiment, role=Metric.Role.SECONDARY, **fields)


def _population(experiment, groups):  # type: ignore[no-untyped-def]
    populate(experiment, groups)
    phase = experiment.phases.get(number=1)
    by_variant: dict[str, list[int]] = {}
    for a in Assignment.objects.filter(phase=phase).select_related("variant").order_by("customer_id"):
        by_variant.setdefault(a.variant.key, []).append(a.customer_id)
    return phase, by_variant


def _orders(customers: list[int], seed: int) -> tuple[list[Event], dict[int, tuple[Decimal, int, Decimal, int]]]:
    """Each customer: a few orders in the window, some before (in and out of the lookback)
    and after it; returns the events and (revenue, orders, pre revenue, pre orders)."""
    events, expected = [], {}
    for index, customer in enumerate(customers):
        k = (index * 7 + seed) % 5
        revenue, pre_revenue = Decimal(0), Decimal(0)
        orders = pre_orders = 0
        for j in range(k % 3):
            amount = Decimal(f"{10 + (index * 13 + j * 29 + seed) % 90}.{(index + j) % 100:02d}")
            events.append(_event(customer, "order", EXPOSED + dt.timedelta(days=j + 1), str(amount)))
            revenue += amount
            orders += 1
        if k >= 2:  # one order 3 days before exposure: in a 14-day lookback
            amount = Decimal(f"{20 + index % 50}.30")
            events.append(_event(customer, "order", EXPOSED - dt.timedelta(days=3), str(amount)))
            pre_revenue += amount
            pre_orders += 1
        # Ignored: at the window's end (exclusive), and 20 days before (outside the lookback)
        events.append(_event(customer, "order", EXPOSED + dt.timedelta(days=7), "999.00"))
        events.append(_event(customer, "order", EXPOSED - dt.timedelta(days=20), "500.00"))
        expected[customer] = (revenue, orders, pre_revenue, pre_orders)
    return events, expected


def _reference(rows: list[tuple]) -> Moments:
    return Moments.of_values([list(r) for r in rows])


def test_value_cells__sum_metric_with_cuped__moments_equal_python_per_customer_values() -> None:
    # Given a revenue metric (sum of order amounts, 7-day window, 14-day lookback)
    experiment = experiment_create(metrics=(("order", "primary"),))
    metric = _metric(experiment, kind=Metric.Kind.SUM)
    phase, by_variant = _population(
        experiment, [Group("control", 30, layers={"tier": "new"}), Group("treatment", 25, layers={"tier": "vip"})]
    )
    events, expected = _orders(by_variant["control"] + by_variant["treatment"], seed=3)
    Event.objects.bulk_create(events)

    # When
    with CaptureQueriesContext(connection) as queries:
        cells = value_cells(phase=phase, metric=metric, as_of=None)

    # Then each arm's n, sums and products are those of (revenue, pre revenue) per customer
    variants = {v.key: v.pk for v in experiment.variants.all()}
    for key in ("control", "treatment"):
        ref = _reference([(expected[c][0], expected[c][2]) for c in by_variant[key]])
        got = cells.overall[variants[key]]
        assert got.n == ref.n
        assert [Decimal(str(s)) for s in got.sums] == [Decimal(str(s)) for s in ref.sums]
        assert [[Decimal(str(v)) for v in row] for row in got.products] == [
            [Decimal(str(v)) for v in row] for row in ref.products
        ]
    assert cells.cuped and cells.currency == "EUR"
    assert cells.layers[("tier", "new")][variants["control"]].n == 30
    # and ONE GROUP BY reads them (plus the currency check and the snapshot labels)
    assert sum("GROUP BY" in q["sql"] for q in queries.captured_queries) == 1


def test_value_cells__ratio_metric__numerator_revenue_denominator_orders() -> None:
    experiment = experiment_create(metrics=(("order", "primary"),))
    order = EventType.objects.get(code="order")
    metric = _metric(
        experiment, kind=Metric.Kind.RATIO, numerator_part="sum", denominator_event_type=order, denominator_part="count"
    )
    assert metric.key == "order:sum/order:count"
    phase, by_variant = _population(experiment, [Group("control", 20), Group("treatment", 20)])
    events, expected = _orders(by_variant["control"] + by_variant["treatment"], seed=5)
    Event.objects.bulk_create(events)

    cells = value_cells(phase=phase, metric=metric, as_of=None)

    variants = {v.key: v.pk for v in experiment.variants.all()}
    ref = _reference([(e[0], e[1], e[2], e[3]) for c, e in expected.items() if c in by_variant["treatment"]])
    got = cells.overall[variants["treatment"]]
    assert [Decimal(str(s)) for s in got.sums] == [Decimal(str(s)) for s in ref.sums]
    assert Decimal(str(got.products[0][1])) == Decimal(str(ref.products[0][1]))  # sum revenue x orders
    assert Decimal(str(got.products[1][3])) == Decimal(str(ref.products[1][3]))  # orders x pre orders


def test_value_cells__net_of_refunds_and_capped__hand_worked() -> None:
    # Given 5 customers spending 10, 20, 30, 40 and 1000 (the last refunds 100), 80th percentile cap
    experiment = experiment_create(metrics=(("order", "primary"),), variants=(("control", 1.0),))
    metric = _metric(
        experiment,
        kind=Metric.Kind.SUM,
        refund_event_type=EventType.objects.get(code="refund"),
        cap_percentile=Decimal("0.8"),
        cuped_lookback_days=0,
    )
    assert metric.key == "order:net"
    phase, by_variant = _population(experiment, [Group("control", 5)])
    customers = by_variant["control"]
    at = EXPOSED + dt.timedelta(days=1)
    events = [_event(c, "order", at, f"{v}.00") for c, v in zip(customers, (10, 20, 30, 40, 1000), strict=True)]
    events.append(_event(customers[4], "refund", at + dt.timedelta(hours=1), "100.00"))
    Event.objects.bulk_create(events)

    cells = value_cells(phase=phase, metric=metric, as_of=None)

    # net 10, 20, 30, 40, 900; rank ceil(0.8 * 5) = 4 -> cap 40; capped 10, 20, 30, 40, 40
    assert cells.cap == Decimal("40")
    (got,) = cells.overall.values()
    assert (got.n, got.sums[0], got.products[0][0]) == (5, Decimal(140), Decimal(100 + 400 + 900 + 1600 + 1600))
    assert not cells.cuped and got.k == 1


def test_value_cells__mixed_currencies__undefined_unless_a_declared_rate_converts() -> None:
    experiment = experiment_create(metrics=(("order", "primary"),))
    metric = _metric(experiment, kind=Metric.Kind.SUM)
    phase, by_variant = _population(experiment, [Group("control", 2), Group("treatment", 2)])
    at = EXPOSED + dt.timedelta(days=1)
    Event.objects.bulk_create(
        [
            _event(by_variant["control"][0], "order", at, "10.00", "EUR"),
            _event(by_variant["treatment"][0], "order", at, "10.00", "USD"),
        ]
    )

    cells = value_cells(phase=phase, metric=metric, as_of=None)

    assert cells.overall == {} and cells.undefined["moments"].code == "mixed_currencies"
    assert "EUR, USD" in cells.undefined["moments"].message
    # and a declared reporting currency other than the events' is refused as well
    only_eur = value_cells(phase=phase, metric=_metric(experiment, kind=Metric.Kind.COUNT), as_of=None)
    assert only_eur.undefined == {}  # counts carry no money
    assert (
        value_cells(phase=phase, metric=metric, as_of=None, reporting_currency="GBP").undefined["moments"].code
        == "mixed_currencies"
    )
    # A declared rule converts: 10.00 USD at 0.5 counts as 5.00 EUR (per event, to the cent)
    converted = value_cells(
        phase=phase, metric=metric, as_of=None, reporting_currency="EUR", currency_rates={"USD": "0.5"}
    )
    assert converted.undefined == {} and converted.currency == "EUR"
    assert sum(m.sums[0] for m in converted.overall.values()) == Decimal("15.00")
    # ... and a bad or missing rate is no rule at all
    assert (
        value_cells(phase=phase, metric=metric, as_of=None, reporting_currency="EUR", currency_rates={"USD": "-1"})
        .undefined["moments"]
        .code
        == "mixed_currencies"
    )


def test_value_cells__open_windows_excluded__only_closed_customers_counted() -> None:
    experiment = experiment_create(metrics=(("order", "primary"),))
    metric = _metric(experiment, kind=Metric.Kind.COUNT)
    phase, _ = _population(experiment, [Group("control", 10, day=0), Group("control", 4, day=6)])

    # Exposed on day 0 (window closes day 7, 01:00) vs day 6: as of day 8 only the first 10 count
    cells = value_cells(phase=phase, metric=metric, as_of=PHASE_START + dt.timedelta(days=8))

    (got,) = cells.overall.values()
    assert got.n == 10


# --- Stored values: the conversion refresh materializes them, the report reads them ---------


def _same(a: Moments, b: Moments) -> bool:
    def norm(m: Moments) -> tuple:
        return (m.n, [Fraction(s) for s in m.sums], [[Fraction(v) for v in r] for r in m.products])

    return norm(a) == norm(b)


def _scenario(name: str):  # type: ignore[no-untyped-def]
    experiment = experiment_create(metrics=(("order", "primary"),))
    order, refund = EventType.objects.get(code="order"), EventType.objects.get(code="refund")
    metric = {
        "sum_cuped": lambda: _metric(experiment, kind=Metric.Kind.SUM),
        "ratio_cuped": lambda: _metric(
            experiment,
            kind=Metric.Kind.RATIO,
            numerator_part="sum",
            denominator_event_type=order,
            denominator_part="count",
        ),
        "net_capped": lambda: _metric(
            experiment, kind=Metric.Kind.SUM, refund_event_type=refund, cap_percentile=Decimal("0.9")
        ),
        "count_open": lambda: _metric(experiment, kind=Metric.Kind.COUNT),
        "count_boundary": lambda: _metric(experiment, kind=Metric.Kind.COUNT),
    }[name]()
    phase, by_variant = _population(
        experiment,
        [
            Group("control", 20, layers={"tier": "new"}),
            Group("treatment", 16, layers={"tier": "vip"}),
            Group("treatment", 6, day=6, layers={"tier": "new"}),
        ],
    )
    events, _ = _orders(by_variant["control"] + by_variant["treatment"], seed=7)
    # a refund larger than the customer's order: a negative net value
    events.append(_event(by_variant["control"][1], "refund", EXPOSED + dt.timedelta(days=2), "500.00"))
    Event.objects.bulk_create(events)
    # count_open: the cutoff (as_of - window) falls between exposure days; count_boundary: at
    # a minute after the first exposure of the day-6 customers, so their day is split by the cutoff
    as_of = {
        "count_open": PHASE_START + dt.timedelta(days=8),
        "count_boundary": EXPOSED + dt.timedelta(days=6, hours=metric.window_hours, minutes=1),
    }.get(name)
    return experiment, phase, metric, as_of


@pytest.mark.parametrize("name", ["sum_cuped", "ratio_cuped", "net_capped", "count_open", "count_boundary"])
def test_value_cells__after_refresh__stored_values_give_the_events_moments_without_reading_events(name: str) -> None:
    # Given a value metric whose moments are first computed from the events
    experiment, phase, metric, as_of = _scenario(name)
    from_events = value_cells(phase=phase, metric=metric, as_of=as_of)
    assert not from_events.stored

    # When the conversion refresh has run, the same call reads the stored values
    conversions_refresh(experiment=experiment, full=True)
    metric.refresh_from_db()
    with CaptureQueriesContext(connection) as queries:
        stored = value_cells(phase=phase, metric=metric, as_of=as_of)

    # Then every cell's moments and the cap are the same, and no query touched the events
    assert stored.stored and stored.cap == from_events.cap and stored.currency == from_events.currency
    assert from_events.overall.keys() == stored.overall.keys()
    assert all(_same(from_events.overall[v], stored.overall[v]) for v in stored.overall)
    assert from_events.layers.keys() == stored.layers.keys()
    assert all(
        _same(from_events.layers[key][v], stored.layers[key][v]) for key in stored.layers for v in stored.layers[key]
    )
    assert not any("segments_event" in q["sql"] for q in queries.captured_queries)
    if name == "count_boundary":  # the day-6 customers are in (16 + 6 treatment customers)
        assert sum(m.n for m in stored.overall.values()) == 42
    # and only customers with a non-zero value have a row
    assert MetricValue.objects.filter(metric=metric).count() < Assignment.objects.filter(phase=phase).count()


@pytest.mark.parametrize(("percentile", "cap"), [("0.1", "-50"), ("0.5", "0"), ("0.9", "30")])
def test_value_cells__stored_cap_with_negatives_and_zeros__nearest_rank_hand_worked(percentile: str, cap: str) -> None:
    # Given 10 customers whose net values are -50, 0 (five without events), 10, 20, 30, 1000
    experiment = experiment_create(metrics=(("order", "primary"),), variants=(("control", 1.0),))
    metric = _metric(
        experiment,
        kind=Metric.Kind.SUM,
        refund_event_type=EventType.objects.get(code="refund"),
        cap_percentile=Decimal(percentile),
        cuped_lookback_days=0,
    )
    phase, by_variant = _population(experiment, [Group("control", 10)])
    c = by_variant["control"]
    at = EXPOSED + dt.timedelta(days=1)
    Event.objects.bulk_create(
        [_event(c[0], "order", at, "10.00"), _event(c[0], "refund", at + dt.timedelta(hours=1), "60.00")]
        + [_event(x, "order", at, f"{v}.00") for x, v in zip(c[6:], (10, 20, 30, 1000), strict=True)]
    )
    conversions_refresh(experiment=experiment, full=True)
    metric.refresh_from_db()

    cells = value_cells(phase=phase, metric=metric, as_of=None)

    # Then sorted -50, 0, 0, 0, 0, 0, 10, 20, 30, 1000: rank ceil(p x 10) is 1, 5 or 9
    assert cells.stored and cells.cap == Decimal(cap)
    values = [min(v, Decimal(cap)) for v in (-50, 0, 0, 0, 0, 0, 10, 20, 30, 1000)]
    (got,) = cells.overall.values()
    assert (got.n, got.sums[0], got.products[0][0]) == (10, sum(values), sum(v * v for v in values))


def test_conversions_refresh__incremental_and_changed_rule__stored_values_follow() -> None:
    experiment, phase, metric, _ = _scenario("sum_cuped")
    conversions_refresh(experiment=experiment, full=True)
    customer = Assignment.objects.filter(phase=phase).order_by("customer_id").first().customer_id

    # When a late order arrives and the incremental refresh runs
    Event.objects.create(
        event_id="late",
        customer_id=customer,
        event_type=EventType.objects.get(code="order"),
        occurred_at=EXPOSED + dt.timedelta(days=2),
        amount=Decimal("123.45"),
        currency="EUR",
    )
    conversions_refresh(experiment=experiment)
    metric.refresh_from_db()
    stored = value_cells(phase=phase, metric=metric, as_of=None)
    # Then the stored values include it, as the events do
    Metric.objects.filter(pk=metric.pk).update(values_signature="")
    metric.refresh_from_db()
    from_events = value_cells(phase=phase, metric=metric, as_of=None)
    assert stored.stored and not from_events.stored
    assert all(_same(from_events.overall[v], stored.overall[v]) for v in stored.overall)

    # When the window changes, the stored values no longer mean this metric: events until a refresh
    conversions_refresh(experiment=experiment)
    Metric.objects.filter(pk=metric.pk).update(window_hours=24)
    metric.refresh_from_db()
    assert not value_cells(phase=phase, metric=metric, as_of=None).stored
    conversions_refresh(experiment=experiment)  # incremental, but the signature changed: all rewritten
    metric.refresh_from_db()
    rewritten = value_cells(phase=phase, metric=metric, as_of=None)
    Metric.objects.filter(pk=metric.pk).update(values_signature="")
    metric.refresh_from_db()
    again = value_cells(phase=phase, metric=metric, as_of=None)
    assert rewritten.stored and all(_same(again.overall[v], rewritten.overall[v]) for v in again.overall)


def test_conversions_refresh__incremental_new_currency__stored_values_undefined_until_a_rate_is_declared() -> None:
    experiment, phase, metric, _ = _scenario("sum_cuped")
    conversions_refresh(experiment=experiment, full=True)
    customer = Assignment.objects.filter(phase=phase).order_by("customer_id").first().customer_id

    # When one customer's order in USD arrives and the incremental refresh runs
    Event.objects.create(
        event_id="usd",
        customer_id=customer,
        event_type=EventType.objects.get(code="order"),
        occurred_at=EXPOSED + dt.timedelta(days=2),
        amount=Decimal("10.00"),
        currency="USD",
    )
    conversions_refresh(experiment=experiment)
    metric.refresh_from_db()

    # Then the stored values are not summed across currencies ...
    cells = value_cells(phase=phase, metric=metric, as_of=None)
    assert cells.stored and cells.undefined["moments"].code == "mixed_currencies"
    assert metric.values_currencies == ["EUR", "USD"]
    # ... and with a declared rate (a changed rule) the events are read until the next refresh
    rates = {"reporting_currency": "EUR", "currency_rates": {"USD": "0.5"}}
    assert not value_cells(phase=phase, metric=metric, as_of=None, **rates).stored
