"""Customers respond: goal events drawn from the planted effects, written through ingestion.

For each campaign experiment, every analysed customer (assigned and exposed, control
included: intent to treat) converts with probability

    p = baseline(layer) + lift(variant, layer)   if a message of the campaign reached them
    p = baseline(layer)                          otherwise (control, suppressed, held)

where ``layer`` is the customer's layer of the plan's ``evaluate_dimension`` in the
assignment-time snapshot (the report's grouping). The draw is a hash of (seed, experiment,
customer), not a random stream, so it does not depend on the order of rows or on which
other customers exist; the event id is derived from the campaign and customer and the
event time from the first exposure, so a re-run writes the same events and ingestion
stores nothing new. Converters who hold a coupon of the campaign redeem it (the coupon
service writes the ``coupon_redeemed`` event, also idempotent).

Event times fall 1–5 seconds after the customer's first exposure: the demo compresses
the conversion window (days, in the experiments) into the minute it runs in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from statistics import NormalDist

from campaigns.models import Coupon, Delivery
from campaigns.services.offers import CouponError, coupon_redeem
from demo.generator import MARKETS
from demo.plan import CampaignPlan
from experiments import selectors as experiment_selectors
from segments.models import Customer
from segments.services.ingestion import EventInput, Outcome, events_record

BATCH = 1000
MAX_DELAY_SECONDS = 5.0
_MARKET_BY_TZ = {m.timezone: m for m in MARKETS}
_NORMAL = NormalDist()


def uniform(*parts: object) -> float:
    """A deterministic draw in [0, 1) from its inputs (SHA-256, 52 bits)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:7], "big") / float(1 << 56)


@dataclass(frozen=True)
class ResponseStats:
    campaign: str
    analysed: int
    reached: int
    conversions: int
    created: int
    redeemed: int
    by_cell: dict[tuple[str | None, str], tuple[int, int, int]]  # (layer, variant) -> (customers, reached, conv.)
    latest_at: dt.datetime | None


def _amount(kind: str, timezone: str, u: float) -> tuple[Decimal, str]:
    market = _MARKET_BY_TZ.get(timezone)
    scale, currency = (market.price_scale, market.currency) if market else (1.0, "EUR")
    # A year of membership at 49 EUR; orders log-normal with a median of 45 EUR.
    eur = 49.0 if kind == "membership_renewed" else 45.0 * math.exp(0.6 * _NORMAL.inv_cdf(min(max(u, 1e-9), 1 - 1e-9)))
    digits = 0 if currency == "JPY" else 2
    return Decimal(str(round(eur * scale, digits))).quantize(Decimal("0.01")), currency


def _reached_ids(campaign_key: str) -> set[int]:
    return set(
        Delivery.objects.filter(campaign__key=campaign_key, status=Delivery.Status.SENT)
        .values_list("customer_id", flat=True)
        .distinct()
    )


def responses_simulate(
    *, plan: CampaignPlan, seed: int, progress: Callable[[int], None] | None = None
) -> ResponseStats:
    """Write the goal events of one campaign's experiment; see the module doc."""
    experiment = experiment_selectors.experiment_get(key=plan.experiment.key)
    if experiment is None:
        raise LookupError(f"experiment {plan.experiment.key} does not exist; set the demo up first")
    control = {v.key for v in plan.experiment.variants if v.is_control}
    reached = _reached_ids(plan.key)
    rows = (
        experiment_selectors.assignments_queryset(experiment=experiment)
        .filter(first_exposed_at__isnull=False, conflicting_exposure=False)
        .order_by("pk")
        .values_list(
            "customer_id",
            "customer__external_id",
            "customer__timezone",
            "variant__key",
            "snapshot__layers",
            "first_exposed_at",
        )
    )
    cells: dict[tuple[str | None, str], list[int]] = {}
    events: list[EventInput] = []
    converters: dict[int, dt.datetime] = {}
    analysed = reached_n = created = 0
    latest: dt.datetime | None = None

    def flush() -> None:
        nonlocal created
        if events:
            result = events_record(events=events, unknown_customers="reject")
            if result.errors:
                first = result.errors[0]
                raise RuntimeError(
                    f"response events refused: {first.field}: {first.message} (a database set up by another version "
                    "of the demo, or another seed? start from an empty GROWTH_VAR_DIR, e.g. `make clean`)"
                )
            created += result.count(Outcome.CREATED)
            events.clear()

    for customer_id, external_id, timezone, variant, layers, exposed_at in rows.iterator(chunk_size=2000):
        analysed += 1
        layer = (layers or {}).get(plan.evaluate_dimension) if plan.evaluate_dimension else None
        is_reached = customer_id in reached
        reached_n += is_reached
        p = plan.baseline_for(layer)
        if is_reached and variant not in control:
            p += plan.lift_for(variant, layer)
        cell = cells.setdefault((layer, variant), [0, 0, 0])
        cell[0] += 1
        cell[1] += is_reached
        if uniform(seed, plan.experiment.key, external_id) >= p:
            continue
        cell[2] += 1
        at = exposed_at + dt.timedelta(seconds=1 + (MAX_DELAY_SECONDS - 1) * uniform(seed, "delay", external_id))
        latest = at if latest is None or at > latest else latest
        amount, currency = _amount(plan.experiment.metric, timezone, uniform(seed, "amount", external_id))
        if is_reached and variant not in control:
            factor = plan.order_value_for(variant, layer)
            if factor != 1.0:  # the planted value effect: smaller baskets
                amount = (amount * Decimal(str(factor))).quantize(Decimal("0.01"))
        events.append(
            EventInput(
                event_id=f"demo-response-{plan.key}-{external_id}",
                customer_id=external_id,
                type=plan.experiment.metric,
                occurred_at=at,
                properties={"campaign": plan.key, "simulated": True},
                amount=amount,
                currency=currency,
            )
        )
        converters[customer_id] = at
        if len(events) >= BATCH:
            flush()
            if progress:
                progress(BATCH)
    flush()
    redeemed = _redeem(plan.key, converters)
    return ResponseStats(
        campaign=plan.key,
        analysed=analysed,
        reached=reached_n,
        conversions=len(converters),
        created=created,
        redeemed=redeemed,
        by_cell={key: (a, b, c) for key, (a, b, c) in cells.items()},
        latest_at=latest,
    )


def _redeem(campaign_key: str, converters: dict[int, dt.datetime]) -> int:
    """Converters holding an unredeemed coupon of the campaign redeem it when they convert."""
    redeemed = 0
    ids = sorted(converters)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        coupons = list(
            Coupon.objects.filter(campaign__key=campaign_key, customer_id__in=chunk, redeemed_at__isnull=True)
            .order_by("pk")
            .values_list("code", "customer_id")
        )
        customers = Customer.objects.in_bulk([cid for _, cid in coupons])
        for code, customer_id in coupons:
            try:
                coupon_redeem(
                    code=code, customer=customers[customer_id], reference="demo-response", now=converters[customer_id]
                )
            except CouponError:  # expired before the customer came back
                continue
            redeemed += 1
    return redeemed
