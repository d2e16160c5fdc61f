"""A deterministic synthetic business: customers, what they did, and their memberships.

``generate(spec, out_dir)`` writes three files the import commands load:

- ``customers.csv``: external ids ``cust-000000``…, signups spread over ``spec.months``
  (more of them recently, as a growing business has), time zones and locales from nine
  markets, attributes (city tier, age band, acquisition channel, persona), roles (every
  customer is a ``buyer``; about 8% are also ``seller``: a two-sided marketplace), and contact
  points (email, E.164 phone, push token) with consent and some opt-outs. The acquisition
  channel and the city tier depend on the persona (paid search and social bring more
  customers who do not come back, tier-1 cities more big spenders), so retention by channel
  or city tier differs the way a growth team expects to see it;
- ``events.jsonl``: per customer, in time order: ``signup``; ``referral_signup`` (with the
  referrer's ``external_id`` in ``properties.referrer_id``) for referred customers, whose
  referrer always signed up earlier; ``login`` / ``visit`` / ``add_to_cart`` as Poisson
  processes; ``order`` with log-normal amounts (a few customers bring most of the
  revenue), a SKU and its product line (``properties.product``: TP, CM, KB, HD, SP) and,
  for some, a ``coupon`` (then also ``coupon_redeemed``); some ``refund``;
  ``membership_renewed`` at renewals; for sellers, ``sale`` events (a buyer bought from
  them: the amount is the seller's revenue, log-normal, a few sellers make most of it) from
  the day they started selling until they stop; a product page view before each order and
  carts left behind after some product views (the five-step funnel's path);
  ``referral_invite_sent`` on the inviter after some orders (they shared their personal
  referral code: the AARRR funnel's Referral step);
- ``memberships.jsonl``: terms on ``plus`` / ``premium`` plans whose latest expiry is
  spread over four windows relative to ``spec.end`` (expired over 3 months ago, expired
  within 3 months, expiring within 3 months, valid for more than 3 months), so every
  expiry window has members.

Each customer is generated from its own random stream (seeded with ``(seed, index)``; the
seller side from a second stream ``(seed, index, "seller")`` and the inviter's invitations
from a third, ``(seed, index, "referral")``, so adding them changed no other draw: the
buyer-side events, and with them the experiments' findings, are what they were),
so the output is a pure function of the spec, any customer can be generated alone
(``customer_story``), and one customer is in memory at a time. No Django import: the
command and the benchmarks call it directly.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import math
import multiprocessing
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.progress import progress_bar

DAY = dt.timedelta(days=1)
CUSTOMER_COLUMNS = (
    "external_id",
    "signed_up_at",
    "timezone",
    "locale",
    "attributes",
    "email",
    "email_consent_at",
    "email_opt_out_at",
    "phone",
    "sms_consent_at",
    "sms_opt_out_at",
    "push_token",
    "push_consent_at",
    "push_opt_out_at",
    "roles",
)


@dataclass(frozen=True)
class Market:
    timezone: str
    locale: str
    phone_prefix: str
    phone_digits: int
    currency: str
    price_scale: float  # typical order value in the local currency, relative to EUR
    weight: float


MARKETS: tuple[Market, ...] = (
    Market("Europe/Paris", "fr-FR", "+33", 9, "EUR", 1.0, 18),
    Market("Europe/Berlin", "de-DE", "+49", 10, "EUR", 1.0, 14),
    Market("Europe/London", "en-GB", "+44", 10, "GBP", 0.85, 12),
    Market("America/New_York", "en-US", "+1", 10, "USD", 1.1, 20),
    Market("America/Sao_Paulo", "pt-BR", "+55", 11, "BRL", 5.5, 9),
    Market("Asia/Tokyo", "ja-JP", "+81", 10, "JPY", 160.0, 8),
    Market("Asia/Shanghai", "zh-CN", "+86", 11, "CNY", 7.8, 8),
    Market("Asia/Kolkata", "en-IN", "+91", 10, "INR", 90.0, 6),
    Market("Australia/Sydney", "en-AU", "+61", 9, "AUD", 1.6, 5),
)


@dataclass(frozen=True)
class Persona:
    """How a kind of customer behaves: daily rates, order value, churn."""

    name: str
    weight: float
    visits_per_day: float
    logins_per_day: float
    orders_per_day: float
    order_mu: float  # log-normal location of the order value in EUR (median = e^mu)
    churn_probability: float
    churn_mean_days: float
    membership_probability: float


PERSONAS: tuple[Persona, ...] = (
    Persona("vip", 5, 0.35, 0.2, 0.12, math.log(120), 0.05, 200, 0.8),
    Persona("regular", 25, 0.15, 0.07, 0.04, math.log(55), 0.15, 150, 0.45),
    Persona("occasional", 40, 0.05, 0.025, 0.01, math.log(35), 0.35, 100, 0.2),
    Persona("dormant", 30, 0.03, 0.02, 0.002, math.log(25), 0.9, 20, 0.05),
)
ORDER_SIGMA = 0.7
CHANNELS = ("organic", "paid_search", "social", "email", "partner")
# Where each persona comes from (weights over CHANNELS) and where it lives (over city tiers
# 1-4): the channel mix overall stays close to 40/20/20/10/10, but paid search and social
# bring more dormant customers, email and partners more regulars. One draw each whatever
# the weights (``random.choices``), so the rest of a customer's stream is unchanged.
CHANNEL_WEIGHTS = {
    "vip": [50, 10, 8, 17, 15],
    "regular": [45, 14, 14, 15, 12],
    "occasional": [40, 20, 22, 8, 10],
    "dormant": [33, 28, 28, 5, 6],
}
CITY_TIER_WEIGHTS = {
    "vip": [42, 35, 16, 7],
    "regular": [30, 36, 22, 12],
    "occasional": [23, 35, 27, 15],
    "dormant": [20, 34, 27, 19],
}
# The seller side of the marketplace: a share of customers also sell (from their own random
# stream). Sales per day per seller are log-normal around SELLER_SALES_PER_DAY (a few
# sellers sell a lot), each sale log-normal around SALE_MEDIAN_EUR; sellers stop selling
# after an exponential time (mean SELLER_MEAN_DAYS) or at the end of the period.
SELLER_SHARE = 0.08
ABANDON_SHARE = 0.3  # product views followed by a cart that is left behind (demo.generator._browse_side)
SELLER_SALES_PER_DAY = 0.08
SALE_MEDIAN_EUR = 30.0
SELLER_MEAN_DAYS = 240.0
# Product lines (the code tags name, e.g. TP2 = bought TP twice): tea & teapots, coffee
# machines, kitchen basics, home decor, spices. SKU n belongs to line (n - 1) mod 5, so the
# line adds no random draw and every other generated value stays what it was.
PRODUCT_LINES = ("TP", "CM", "KB", "HD", "SP")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
PLANS = (("plus", 365, ("silver", "gold")), ("premium", 365, ("gold", "platinum")), ("plus", 90, ("silver",)))
# Latest-expiry windows relative to spec.end, in days: the four renewal windows.
EXPIRY_WINDOWS = ((-270, -91), (-90, -1), (1, 90), (91, 360))
REFERRAL_PROBABILITY = 0.12
# The inviter's side of referrals (demo.generator._referral_side): after an order the shop
# offers "invite a friend" with the customer's personal code; INVITE_AFTER_ORDER_SHARE of
# orders are followed, within INVITE_DELAY_HOURS, by a ``referral_invite_sent`` on the
# customer who invites (the AARRR funnel's Referral step).
INVITE_AFTER_ORDER_SHARE = 0.15
INVITE_DELAY_HOURS = (0.25, 48.0)
INVITE_VIA = ("link", "email", "sms")


def product_line(sku_number: int) -> str:
    return PRODUCT_LINES[(sku_number - 1) % len(PRODUCT_LINES)]


def _utc_midnight_today() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class DemoSpec:
    customers: int = 2000
    seed: int = 42
    months: int = 18
    # "Now" for the synthetic business: nothing happens after it. The output is a pure
    # function of the spec, so pin it for reproducible files (default: today, 00:00 UTC).
    end: dt.datetime = field(default_factory=_utc_midnight_today)

    @property
    def start(self) -> dt.datetime:
        return self.end - dt.timedelta(days=round(self.months * 30.44))


@dataclass(frozen=True)
class CustomerStory:
    customer: dict[str, Any]
    events: list[dict[str, Any]]
    memberships: list[dict[str, Any]]


@dataclass(frozen=True)
class DemoSummary:
    customers: int
    events: int
    memberships: int
    files: dict[str, Path]


def external_id(index: int) -> str:
    return f"cust-{index:06d}"


def _ts(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pick(rng: random.Random, options: tuple[Any, ...], weights: list[float]) -> Any:
    return rng.choices(options, weights=weights)[0]


def _poisson_times(
    rng: random.Random, rate_per_day: float, start: dt.datetime, end: dt.datetime
) -> Iterator[dt.datetime]:
    if rate_per_day <= 0 or end <= start:
        return
    moment = start
    while True:
        moment += dt.timedelta(days=rng.expovariate(rate_per_day))
        if moment >= end:
            return
        yield moment


def signup_time(spec: DemoSpec, index: int, rng: random.Random) -> dt.datetime:
    """Monotonic in ``index`` (a referrer always signed up before the customers it referred);
    the density grows over the period (quantile of t^1.6 on [0, 1])."""
    position = ((index + rng.random()) / max(spec.customers, 1)) ** (1 / 1.6)
    span = (spec.end - spec.start).total_seconds()
    return spec.start + dt.timedelta(seconds=int(position * span * 0.995))


def customer_story(spec: DemoSpec, index: int) -> CustomerStory:
    rng = random.Random(f"{spec.seed}:{index}")
    ext = external_id(index)
    market = _pick(rng, MARKETS, [m.weight for m in MARKETS])
    persona = _pick(rng, PERSONAS, [p.weight for p in PERSONAS])
    signed_up = signup_time(spec, index, rng)
    referrer = external_id(rng.randrange(index)) if index > 0 and rng.random() < REFERRAL_PROBABILITY else None
    channel = "referral" if referrer else _pick(rng, CHANNELS, CHANNEL_WEIGHTS[persona.name])

    # Activity stops at churn (if this customer churns) or at the end of the period.
    active_until = spec.end
    if rng.random() < persona.churn_probability:
        active_until = min(spec.end, signed_up + dt.timedelta(days=rng.expovariate(1 / persona.churn_mean_days)))

    customer = _customer_row(rng, spec, ext, market, persona, signed_up, channel)
    events: list[dict[str, Any]] = []

    def add(kind: str, at: dt.datetime, **extra: Any) -> None:
        events.append(
            {
                "event_id": f"ev-{index:06d}-{len(events):05d}",
                "customer_id": ext,
                "type": kind,
                "occurred_at": at,
                **extra,
            }
        )

    add("signup", signed_up, properties={"channel": channel})
    if referrer:
        add("referral_signup", signed_up + dt.timedelta(seconds=5), properties={"referrer_id": referrer})
    for moment in _poisson_times(rng, persona.logins_per_day, signed_up, active_until):
        add("login", moment)
    for moment in _poisson_times(rng, persona.visits_per_day, signed_up, active_until):
        add("visit", moment, properties={"page": _pick(rng, ("home", "product", "search", "offers"), [3, 4, 2, 1])})
    first_order = True
    for moment in _poisson_times(rng, persona.orders_per_day, signed_up + DAY / 24, active_until):
        eur = rng.lognormvariate(persona.order_mu, ORDER_SIGMA)
        amount = round(eur * market.price_scale, 2 if market.currency != "JPY" else 0)
        number = rng.randrange(1, 60)
        sku, product = f"SKU{number:03d}", product_line(number)
        add(
            "add_to_cart",
            moment - dt.timedelta(minutes=rng.randint(2, 50)),
            properties={"sku": sku, "product": product},
        )
        properties: dict[str, Any] = {
            "sku": sku,
            "product": product,
            "items": rng.randint(1, 4),
            "first_order": first_order,
        }
        coupon = (first_order and rng.random() < 0.4) or rng.random() < 0.08
        if coupon:
            properties["coupon"] = "WELCOME10" if first_order else f"PROMO{rng.randrange(1, 9)}"
        order_id = f"ord-{index:06d}-{len(events):05d}"
        add(
            "order",
            moment,
            amount=f"{amount:.2f}",
            currency=market.currency,
            properties={**properties, "order_id": order_id},
        )
        if coupon:
            add("coupon_redeemed", moment, properties={"code": properties["coupon"]})
        if rng.random() < 0.03:
            refund_at = moment + dt.timedelta(days=rng.uniform(1, 20))
            if refund_at < spec.end:
                add(
                    "refund",
                    refund_at,
                    amount=f"{amount:.2f}",
                    currency=market.currency,
                    properties={"order_id": order_id},
                )
        first_order = False

    memberships = _memberships(rng, spec, ext, persona, market, signed_up, add)
    # Last, so that the buyer side's event ids stay what they were.
    _browse_side(spec, index, list(events), add)
    if _seller_side(spec, index, market, signed_up, add):
        customer["roles"] = "buyer,seller"
    _referral_side(spec, index, list(events), add)
    events.sort(key=lambda e: (e["occurred_at"], e["event_id"]))
    for event in events:
        event["occurred_at"] = _ts(event["occurred_at"])
    return CustomerStory(customer, events, memberships)


def _customer_row(
    rng: random.Random, spec: DemoSpec, ext: str, market: Market, persona: Persona, signed_up: dt.datetime, channel: str
) -> dict[str, Any]:
    def later(base: dt.datetime, max_days: float) -> dt.datetime:
        return min(spec.end - dt.timedelta(seconds=1), base + dt.timedelta(days=rng.uniform(0, max_days)))

    row: dict[str, Any] = {name: "" for name in CUSTOMER_COLUMNS}
    row.update(
        external_id=ext,
        signed_up_at=_ts(signed_up),
        timezone=market.timezone,
        locale=market.locale,
        attributes=json.dumps(
            {
                "city_tier": _pick(rng, (1, 2, 3, 4), CITY_TIER_WEIGHTS[persona.name]),
                "age_band": _pick(rng, AGE_BANDS, [15, 32, 25, 16, 12]),
                "channel": channel,
                "persona": persona.name,
            },
            separators=(",", ":"),
        ),
        roles="buyer",  # everyone can buy; customer_story adds "seller" for sellers
    )
    if rng.random() < 0.92:
        row["email"] = f"{ext}@example.com"
        if rng.random() < 0.75:
            consent = later(signed_up, 0.01)
            row["email_consent_at"] = _ts(consent)
            if rng.random() < 0.06:
                row["email_opt_out_at"] = _ts(later(consent, 300))
    if rng.random() < 0.6:
        row["phone"] = (
            market.phone_prefix
            + str(rng.randint(1, 9))
            + "".join(str(rng.randint(0, 9)) for _ in range(market.phone_digits - 1))
        )
        if rng.random() < 0.45:
            consent = later(signed_up, 2)
            row["sms_consent_at"] = _ts(consent)
            if rng.random() < 0.08:
                row["sms_opt_out_at"] = _ts(later(consent, 200))
    if rng.random() < 0.5:
        row["push_token"] = f"push-{rng.getrandbits(96):024x}"
        if rng.random() < 0.8:
            row["push_consent_at"] = _ts(later(signed_up, 1))
    return row


def _browse_side(spec: DemoSpec, index: int, drawn: list[dict[str, Any]], add: Callable[..., None]) -> None:
    """The path to a purchase, so that the five-step funnel (channel → scene → product →
    decision → done) reads as a shop's does: a product page view 55-120 minutes before each
    order (before its cart), and carts left behind after some product views (30%), so that not
    every cart becomes an order. Own random stream, after every other draw: the events drawn
    before keep their values and ids; a last-seen time moves by at most 15 minutes (an
    abandoned cart after the last product view)."""
    rng = random.Random(f"{spec.seed}:{index}:browse")
    for event in drawn:
        if event["type"] == "order":
            sku, product = event["properties"]["sku"], event["properties"]["product"]
            at = event["occurred_at"] - dt.timedelta(minutes=rng.uniform(55, 120))
            add("visit", at, properties={"page": "product", "sku": sku, "product": product})
        elif event["type"] == "visit" and event["properties"]["page"] == "product" and rng.random() < ABANDON_SHARE:
            number = rng.randrange(1, 60)
            at = min(
                spec.end - dt.timedelta(seconds=1), event["occurred_at"] + dt.timedelta(minutes=rng.uniform(1, 15))
            )
            add("add_to_cart", at, properties={"sku": f"SKU{number:03d}", "product": product_line(number)})


def _seller_side(spec: DemoSpec, index: int, market: Market, signed_up: dt.datetime, add: Callable[..., None]) -> bool:
    """Whether the customer also sells; if so, add their ``sale`` events (own random stream)."""
    rng = random.Random(f"{spec.seed}:{index}:seller")
    if rng.random() >= SELLER_SHARE:
        return False
    started = signed_up + dt.timedelta(days=rng.uniform(0, 60))
    stops = min(spec.end, started + dt.timedelta(days=rng.expovariate(1 / SELLER_MEAN_DAYS)))
    rate = min(2.0, rng.lognormvariate(math.log(SELLER_SALES_PER_DAY), 1.0))
    for moment in _poisson_times(rng, rate, started, stops):
        eur = rng.lognormvariate(math.log(SALE_MEDIAN_EUR), 0.8)
        number = rng.randrange(1, 60)
        add(
            "sale",
            moment,
            amount=f"{round(eur * market.price_scale, 2 if market.currency != 'JPY' else 0):.2f}",
            currency=market.currency,
            properties={"sku": f"SKU{number:03d}", "product": product_line(number)},
        )
    return True


def _referral_side(spec: DemoSpec, index: int, drawn: list[dict[str, Any]], add: Callable[..., None]) -> None:
    """Invitations sent by this customer as an *inviter*: after some of their orders
    (INVITE_AFTER_ORDER_SHARE), a ``referral_invite_sent`` 15 minutes to 2 days later (before
    ``spec.end``), with how it was shared in ``properties.via``. Own random stream, drawn
    last: every event drawn before keeps its values and ids, so the planted effects are what
    they were. The invitation is the inviter's act; the friends' ``referral_signup`` (with
    ``referrer_id``) stay drawn on the friends' side as before, so not every invitation is
    answered by a sign-up, as in a real referral programme."""
    rng = random.Random(f"{spec.seed}:{index}:referral")
    low, high = INVITE_DELAY_HOURS
    for event in drawn:
        if event["type"] != "order" or rng.random() >= INVITE_AFTER_ORDER_SHARE:
            continue
        at = event["occurred_at"] + dt.timedelta(hours=rng.uniform(low, high))
        via = _pick(rng, INVITE_VIA, [5, 3, 2])
        if at < spec.end:
            add("referral_invite_sent", at, properties={"via": via})


def _memberships(
    rng: random.Random,
    spec: DemoSpec,
    ext: str,
    persona: Persona,
    market: Market,
    signed_up: dt.datetime,
    add: Callable[..., None],
) -> list[dict[str, Any]]:
    if rng.random() >= persona.membership_probability:
        return []
    plan, term_days, levels = PLANS[rng.randrange(len(PLANS))]
    earliest_expiry = signed_up + dt.timedelta(days=30)
    # The latest term's expiry falls in one of the four windows; a customer too new for
    # the chosen window moves to the next feasible one.
    window = rng.randrange(len(EXPIRY_WINDOWS))
    for low, high in EXPIRY_WINDOWS[window:]:
        expires = spec.end + dt.timedelta(days=rng.uniform(low, high))
        if expires >= earliest_expiry:
            break
    else:
        expires = max(earliest_expiry, spec.end + DAY)
    terms: list[tuple[dt.datetime, dt.datetime]] = []
    start = max(signed_up + DAY, expires - dt.timedelta(days=term_days))
    terms.append((start, expires))
    # Earlier terms, each renewed into the next one.
    while rng.random() < 0.6:
        previous_start = start - dt.timedelta(days=term_days)
        if previous_start < signed_up + DAY:
            break
        terms.append((previous_start, start))
        start = previous_start
    terms.reverse()
    level = levels[min(len(levels) - 1, len(terms) - 1)]
    rows = []
    price = {"plus": 49.0, "premium": 99.0}[plan] * (term_days / 365) * market.price_scale
    for number, (term_start, term_end) in enumerate(terms):
        rows.append(
            {
                "customer_id": ext,
                "plan": plan,
                "level": level,
                "started_at": _ts(term_start),
                "expires_at": _ts(term_end),
            }
        )
        if number > 0 and term_start < spec.end:
            add(
                "membership_renewed",
                term_start,
                amount=f"{price:.2f}",
                currency=market.currency,
                properties={"plan": plan, "term": number + 1},
            )
    return rows


CHUNK = 2000  # customers per unit of work of a parallel run


def _render_chunk(task: tuple[DemoSpec, int, int]) -> tuple[str, str, str, int, int]:
    """Customers ``start``..``stop - 1`` as the text of the three files (no CSV header)."""
    spec, start, stop = task
    customers = io.StringIO()
    writer = csv.DictWriter(customers, fieldnames=CUSTOMER_COLUMNS)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    events: list[str] = []
    memberships: list[str] = []
    n_events = n_memberships = 0
    for index in range(start, stop):
        story = customer_story(spec, index)
        writer.writerow(story.customer)
        events.extend(dumps(event) + "\n" for event in story.events)
        memberships.extend(dumps(row) + "\n" for row in story.memberships)
        n_events += len(story.events)
        n_memberships += len(story.memberships)
    return customers.getvalue(), "".join(events), "".join(memberships), n_events, n_memberships


def generate(spec: DemoSpec, out_dir: Path, *, progress: bool | None = None, processes: int = 1) -> DemoSummary:
    """Write customers.csv, events.jsonl and memberships.jsonl into ``out_dir``.

    With ``processes`` > 1, chunks of customers are generated in that many processes and
    written in order: the files are byte-identical to a single-process run (each customer
    has its own random stream). Files are written under temporary names and renamed at
    the end, so an interrupted run never leaves a half-written file behind a
    complete-looking name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "customers": out_dir / "customers.csv",
        "events": out_dir / "events.jsonl",
        "memberships": out_dir / "memberships.jsonl",
    }
    partial = {name: path.with_name(path.name + ".part") for name, path in files.items()}
    counts = {"customers": 0, "events": 0, "memberships": 0}
    tasks = [(spec, start, min(start + CHUNK, spec.customers)) for start in range(0, spec.customers, CHUNK)]
    with (
        partial["customers"].open("w", newline="", encoding="utf-8") as customers_file,
        partial["events"].open("w", encoding="utf-8") as events_file,
        partial["memberships"].open("w", encoding="utf-8") as memberships_file,
        progress_bar(total=spec.customers, desc="demo customers", unit="cust", enabled=progress) as bar,
        contextlib.ExitStack() as stack,
    ):
        csv.DictWriter(customers_file, fieldnames=CUSTOMER_COLUMNS).writeheader()
        if processes > 1 and len(tasks) > 1:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(processes))
            chunks: Iterator[tuple[str, str, str, int, int]] = pool.imap(_render_chunk, tasks)
        else:
            chunks = map(_render_chunk, tasks)
        for (_, start, stop), (customers_text, events_text, memberships_text, n_events, n_memberships) in zip(
            tasks, chunks, strict=True
        ):
            customers_file.write(customers_text)
            events_file.write(events_text)
            memberships_file.write(memberships_text)
            counts["customers"] += stop - start
            counts["events"] += n_events
            counts["memberships"] += n_memberships
            bar.update(stop - start)
    for name, path in files.items():
        partial[name].replace(path)
    return DemoSummary(counts["customers"], counts["events"], counts["memberships"], files)
