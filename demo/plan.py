"""What the demo sets up, as data: rule segments, offers, and one campaign of each kind with
its experiment, treatments, content and the true effects the response simulation plants.

No Django import: the pipeline turns this into rows through the apps' services, the
response simulation reads the planted effects from it, and the summary compares them with
what the lift reports found.

Planted effects are absolute lifts of the goal-event probability for customers a treated
variant's message actually *reached* (a delivery sent); everyone assigned, control
included, converts at the layer's baseline otherwise. The reports analyse everyone
assigned and exposed (intent to treat), so what they estimate is the planted lift times
the share of treated customers reached (a message can be suppressed: no consent, capped,
held for quiet hours). The sizes are chosen so that, at the default scale (50,000
customers), each planted effect is found by the Holm-adjusted test with high probability:
the planted cells then hold 400-1,400 customers per arm, about 70% of the treated ones
reached, and their expected z statistics are 5.0-8.9 (power above 0.99 each, at the
strictest Holm step). At 20,000 customers they are 3.2-5.6 (power 0.70-1.0 each): seed 42
still recovers all six, 15,000 does not (tests/demo/test_pipeline.py). Every other
layer × variant has no effect at all, so a "significant" result there is a false positive;
Holm keeps that chance at or below 5% per experiment, whatever the scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# --- Building blocks ------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentPlan:
    key: str
    name: str
    rule: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class TagRulePlan:
    code: str
    name: str
    family: str  # static, consumption or behaviour (tier tags come from the dimensions)
    rule: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class OfferPlan:
    key: str
    name: str
    benefit_kind: str  # percent_off | amount_off | points | free_period
    value: Decimal
    currency: str = ""
    code_prefix: str = ""
    code_source: str = "generated"  # generated | pool | none
    validity_days: int | None = 30
    expires_after_membership_days: int | None = None


@dataclass(frozen=True)
class VariantPlan:
    key: str
    name: str
    weight: Decimal
    is_control: bool = False


@dataclass(frozen=True)
class ContentPlan:
    channel: str
    subject: str = ""
    title: str = ""
    text: str = ""
    html: str = ""


@dataclass(frozen=True)
class TreatmentPlan:
    variant_key: str  # "" = every treated variant
    offer_key: str | None
    contents: tuple[ContentPlan, ...]
    layer: str = ""  # "dimension:layer", "" = every layer
    role: str = ""  # referral: inviter | invitee


@dataclass(frozen=True)
class Effect:
    """A true effect: the goal probability rises by ``lift`` (absolute) for reached
    customers of ``variant`` in ``layer`` (``None``: every layer; the report's overall row)."""

    variant: str
    layer: str | None
    lift: float
    # A value effect (issue 15): the order value of this cell's reached converters is
    # multiplied by this (0.25: a coupon that attracts small baskets), so conversion can
    # rise while revenue per customer falls.
    order_value: float = 1.0


@dataclass(frozen=True)
class ExperimentPlan:
    key: str
    name: str
    hypothesis: str
    variants: tuple[VariantPlan, ...]
    metric: str  # the primary metric's event type
    window_hours: int
    minimum_detectable_effect: Decimal = Decimal("0.30")
    # The analysis plan recorded at start (issue 14): the dimension whose layers carry the
    # planted effects is declared confirmatory, so its layers are in the decision family;
    # broadcasts have a fixed audience. The demo compresses weeks into seconds and reads
    # each report exactly once, after every response is in (``pipeline.analyse``): that is
    # a fixed-horizon design, so its plans are fixed-horizon with the horizon at the
    # (compressed) end, ``configure.DEMO_HORIZON`` after the start. (Always-valid verdicts,
    # the product's default, pay for being readable every day with wider intervals: at the
    # demo's default scale they miss the smallest planted cells.)
    confirmatory_dimensions: tuple[str, ...] = ()
    fixed_audience: bool = False
    inference_mode: str = "fixed"
    # Also measure revenue per customer (``<metric>:sum``, a secondary value metric): where an
    # offer lifts conversion but lowers order value, the report must show revenue falling.
    value_metric: bool = False


@dataclass(frozen=True)
class CampaignPlan:
    key: str
    name: str
    kind: str  # new_user | referral | renewal | winback
    description: str
    channels: tuple[str, ...]
    experiment: ExperimentPlan
    treatments: tuple[TreatmentPlan, ...]
    # Where the report is read: the dimension whose layers carry the planted effects
    # (None: the overall row, for audiences that all sit in one layer, e.g. new sign-ups).
    evaluate_dimension: str | None
    baseline: dict[str, float]  # layer key (of evaluate_dimension) or "*" -> goal probability
    effects: tuple[Effect, ...]
    include_layers: tuple[str, ...] = ()
    exclude_layers: tuple[str, ...] = ()
    exclude_segments: tuple[str, ...] = ()
    split_dimension: str | None = None
    trigger: str = "broadcast"  # broadcast | event
    trigger_event: str | None = None
    trigger_within_hours: int | None = None
    referral_reward_to: str = "both"
    referral_qualifying_event: str | None = None
    referral_cap_per_inviter: int | None = None
    ends_after_days: int = 30

    @property
    def is_triggered(self) -> bool:
        return self.trigger != "broadcast"

    def baseline_for(self, layer: str | None) -> float:
        return self.baseline.get(layer or "", self.baseline.get("*", 0.0))

    def lift_for(self, variant: str, layer: str | None) -> float:
        return sum(e.lift for e in self.effects if e.variant == variant and e.layer in (None, layer))

    def order_value_for(self, variant: str, layer: str | None) -> float:
        factor = 1.0
        for e in self.effects:
            if e.variant == variant and e.layer in (None, layer):
                factor *= e.order_value
        return factor

    def value_planted(self) -> tuple[Effect, ...]:
        """Effects that lower order value (the revenue metric should fall there)."""
        return tuple(e for e in self.effects if e.order_value < 1.0)

    def planted(self) -> set[tuple[str | None, str]]:
        """(layer or None for the overall row, variant) cells with a true effect."""
        return {(e.layer, e.variant) for e in self.effects if e.lift > 0}


# --- The plan -------------------------------------------------------------------------------

HOLDOUT_KEY = "demo-global-holdout"
HOLDOUT_PERCENT = Decimal(5)

_ORDERS = {"event": "order", "agg": "count"}
_WITH_COUPON = [{"property": "coupon", "op": "exists"}]

# Computed tags in the three families a rule decides (the fourth, tier, is written by the
# dimensions), on the generator's attributes (city_tier, age_band, channel), order
# properties (product line, coupon) and events (referral_signup, coupon_redeemed).
TAG_RULES: tuple[TagRulePlan, ...] = (
    TagRulePlan("CT1", "City tier 1", "static", {"attribute": "city_tier", "op": "eq", "value": 1}),
    TagRulePlan("CT4", "City tier 4", "static", {"attribute": "city_tier", "op": "eq", "value": 4}),
    TagRulePlan("AGY", "Aged 18-34", "static", {"attribute": "age_band", "op": "in", "value": ["18-24", "25-34"]}),
    TagRulePlan("F1", "Repurchased (2+ orders)", "consumption", {**_ORDERS, "op": "gte", "value": 2}),
    TagRulePlan("F3", "Repurchased three times (4+ orders)", "consumption", {**_ORDERS, "op": "gte", "value": 4}),
    TagRulePlan(
        "TP2",
        "Bought product TP twice",
        "consumption",
        {**_ORDERS, "where": [{"property": "product", "op": "eq", "value": "TP"}], "op": "gte", "value": 2},
    ),
    TagRulePlan(
        "PS",
        "Price-sensitive",
        "consumption",
        {
            "all": [
                {**_ORDERS, "op": "gte", "value": 2},
                {"share": {"event": "order", "where": _WITH_COUPON}, "op": "gte", "value": 0.5},
            ]
        },
        "Two orders or more, at least half of them with a coupon.",
    ),
    TagRulePlan(
        "VIP",
        "VIP: top 5% by spend (365 days)",
        "consumption",
        {
            "rank": {"event": "order", "agg": "sum", "window": {"last_days": 365}},
            "top_percent": 5,
            "among": "with_value",
        },
    ),
    TagRulePlan(
        "CHSOC", "Acquired through social", "behaviour", {"attribute": "channel", "op": "eq", "value": "social"}
    ),
    TagRulePlan(
        "CHPAID",
        "Acquired through paid search",
        "behaviour",
        {"attribute": "channel", "op": "eq", "value": "paid_search"},
    ),
    TagRulePlan(
        "REF",
        "Joined through a referral",
        "behaviour",
        {"event": "referral_signup", "agg": "count", "op": "gte", "value": 1},
    ),
    TagRulePlan(
        "CPN", "Claimed a coupon", "behaviour", {"event": "coupon_redeemed", "agg": "count", "op": "gte", "value": 1}
    ),
    TagRulePlan(
        "PV3",
        "Viewed product pages 3+ times, no order (30 days)",
        "behaviour",
        {
            "all": [
                {
                    "event": "visit",
                    "where": [{"property": "page", "op": "eq", "value": "product"}],
                    "agg": "count",
                    "window": {"last_days": 30},
                    "op": "gte",
                    "value": 3,
                },
                {**_ORDERS, "window": {"last_days": 30}, "op": "eq", "value": 0},
            ]
        },
    ),
)

# README's example rule ("Segments and computed tiers"), kept working on the demo's data.
README_EXAMPLE_RULE: dict[str, Any] = {
    "all": [
        {"layer": "expiry:expiring_soon"},
        {"event": "order", "agg": "count", "window": {"last_days": 60}, "op": "eq", "value": 0},
        {"not": {"tag": "VIP"}},
        {
            "any": [
                {"attribute": "city_tier", "op": "in", "value": [1, 2]},
                {"rank": {"event": "order", "agg": "sum", "window": {"last_days": 365}}, "top_percent": 10},
            ]
        },
    ]
}

SEGMENTS: tuple[SegmentPlan, ...] = (
    SegmentPlan(
        "referred-customers",
        "Referred customers",
        {"event": "referral_signup", "agg": "count", "op": "gte", "value": 1},
        "Signed up through a referral; they get the referral reward, not the generic new-user offer.",
    ),
    SegmentPlan(
        "big-spenders-365d",
        "Big spenders (1,000+ in 365 days)",
        {"event": "order", "agg": "sum", "window": {"last_days": 365}, "op": "gte", "value": 1000},
    ),
    SegmentPlan(
        "browsers-not-buyers-30d",
        "Browsing but not buying (30 days)",
        {
            "all": [
                {"event": "visit", "agg": "count", "window": {"last_days": 30}, "op": "gte", "value": 3},
                {"event": "order", "agg": "count", "window": {"last_days": 30}, "op": "eq", "value": 0},
            ]
        },
    ),
    SegmentPlan(
        "top-10pct-spend-90d",
        "Top 10% by spend (90 days)",
        {
            "rank": {"event": "order", "agg": "sum", "window": {"last_days": 90}},
            "top_percent": 10,
            "among": "with_value",
        },
    ),
    SegmentPlan(
        "readme-example",
        "README example: expiring members, no order in 60 days, not VIP, big city or big spender",
        README_EXAMPLE_RULE,
        "The rule README shows under 'Segments and computed tiers'.",
    ),
    SegmentPlan(
        "members-expiring-30d",
        "Members expiring within 30 days",
        {"membership": {}, "agg": "latest_expiry", "op": "within_next_days", "value": 30},
    ),
)

OFFERS: tuple[OfferPlan, ...] = (
    OfferPlan("demo-welcome-15", "Welcome: 15% off your first order", "percent_off", Decimal(15), code_prefix="HELLO"),
    OfferPlan("demo-welcome-points", "Welcome: 200 points", "points", Decimal(200), code_source="none"),
    OfferPlan("demo-referral-invitee-15", "Friend's gift: 15% off", "percent_off", Decimal(15), code_prefix="FRIEND"),
    OfferPlan("demo-referral-inviter-10", "Thank you: 10 off", "amount_off", Decimal(10), "EUR", code_prefix="THANKS"),
    OfferPlan("demo-referral-points", "Thank you: 300 points", "points", Decimal(300), code_source="none"),
    OfferPlan(
        "demo-renew-comeback-25",
        "Come back: 25% off renewal",
        "percent_off",
        Decimal(25),
        code_prefix="BACK",
        expires_after_membership_days=90,
    ),
    OfferPlan(
        "demo-renew-early-20",
        "Renew early: 20% off",
        "percent_off",
        Decimal(20),
        code_prefix="RENEW",
        expires_after_membership_days=0,
    ),
    OfferPlan("demo-renew-month-free", "One month free", "free_period", Decimal(30), code_prefix="MONTH"),
    OfferPlan("demo-renew-flat-10", "10% off your renewal", "percent_off", Decimal(10), code_prefix="FLAT"),
    OfferPlan("demo-winback-20", "We miss you: 20% off", "percent_off", Decimal(20), code_prefix="MISSYOU"),
)

THIRDS = (Decimal("0.34"), Decimal("0.33"), Decimal("0.33"))


def _variants(control: str, *treated: tuple[str, str]) -> tuple[VariantPlan, ...]:
    weights = THIRDS if len(treated) == 2 else (Decimal("0.25"),) * 4
    rows = [VariantPlan("control", control, weights[0], is_control=True)]
    rows += [VariantPlan(key, name, weights[i + 1]) for i, (key, name) in enumerate(treated)]
    return tuple(rows)


def _email(subject: str, text: str) -> ContentPlan:
    html = "<p>" + text.replace("\n", "<br>") + "</p>"
    return ContentPlan("email", subject=subject, text=text, html=html)


def _sms(text: str) -> ContentPlan:
    return ContentPlan("sms", text=text)


def _push(title: str, text: str) -> ContentPlan:
    return ContentPlan("push", title=title, text=text)


NEW_USER = CampaignPlan(
    key="demo-new-user",
    name="New-user incentive",
    kind="new_user",
    description="A starter offer within 48 hours of sign-up: a first-order coupon or welcome points.",
    channels=("email", "push"),
    trigger="event",
    trigger_event="signup",
    trigger_within_hours=48,
    exclude_segments=("referred-customers",),
    experiment=ExperimentPlan(
        key="demo-new-user-offer",
        name="New users: first-order coupon vs welcome points",
        hypothesis="A 15% first-order coupon turns more new sign-ups into buyers within a week; points do not.",
        variants=_variants(
            "No welcome offer", ("starter_coupon", "15% first-order coupon"), ("welcome_points", "200 welcome points")
        ),
        metric="order",
        window_hours=7 * 24,
        value_metric=True,
    ),
    treatments=(
        TreatmentPlan(
            "starter_coupon",
            "demo-welcome-15",
            (
                _email(
                    "Welcome! {{ offer.benefit }} on your first order",
                    "Hello and welcome.\nYour code {{ coupon.code }} gives {{ offer.benefit }} until "
                    "{{ coupon.expires_at|date:'Y-m-d' }}.",
                ),
                _push("{{ offer.name }}", "Use {{ coupon.code }} for {{ offer.benefit }} on your first order."),
            ),
        ),
        TreatmentPlan(
            "welcome_points",
            "demo-welcome-points",
            (
                _email(
                    "Welcome! {{ offer.benefit }} are waiting",
                    "Hello and welcome: {{ offer.benefit }} have been added to your account.",
                ),
                _push("{{ offer.name }}", "{{ offer.benefit }} are in your account."),
            ),
        ),
    ),
    evaluate_dimension=None,
    baseline={"*": 0.10},
    # The coupon converts many more new users, but into trial-size first baskets (a tenth of
    # the usual order value): revenue per customer falls although conversion rises (issue
    # 15). Strong on purpose: a few hundred new users per arm at the default scale.
    effects=(Effect("starter_coupon", None, 0.18, order_value=0.1),),
    ends_after_days=60,
)

REFERRAL = CampaignPlan(
    key="demo-referral",
    name="Referral reward",
    kind="referral",
    description="Invite a friend: the invitee's sign-up through a personal code rewards the inviter and the invitee.",
    channels=("email",),
    trigger="event",
    trigger_event="referral_signup",
    referral_reward_to="both",
    referral_qualifying_event="referral_signup",
    referral_cap_per_inviter=5,
    experiment=ExperimentPlan(
        key="demo-referral-reward",
        name="Referral: double-sided gift vs thank-you points",
        hypothesis="A gift for the invited friend makes them order in their first week; points for the inviter "
        "change nothing for the inviter's own orders.",
        variants=_variants(
            "No reward message", ("double_sided", "Both get a gift"), ("inviter_points", "Inviter gets points")
        ),
        metric="order",
        window_hours=7 * 24,
        confirmatory_dimensions=("lifecycle",),
    ),
    treatments=(
        TreatmentPlan(
            "double_sided",
            "demo-referral-invitee-15",
            (
                _email(
                    "A gift from your friend: {{ offer.benefit }}",
                    "Your friend invited you. Code {{ coupon.code }}: {{ offer.benefit }} on your first order.",
                ),
            ),
            role="invitee",
        ),
        TreatmentPlan(
            "double_sided",
            "demo-referral-inviter-10",
            (
                _email(
                    "Thank you: {{ offer.benefit }}", "Your friend joined. Code {{ coupon.code }}: {{ offer.benefit }}."
                ),
            ),
            role="inviter",
        ),
        TreatmentPlan(
            "inviter_points",
            None,
            (_email("Welcome from {{ campaign.name }}", "Your friend invited you: welcome aboard."),),
            role="invitee",
        ),
        TreatmentPlan(
            "inviter_points",
            "demo-referral-points",
            (_email("Thank you: {{ offer.benefit }}", "Your friend joined: {{ offer.benefit }} for you."),),
            role="inviter",
        ),
    ),
    evaluate_dimension="lifecycle",
    baseline={"new": 0.10, "*": 0.06},
    effects=(Effect("double_sided", "new", 0.18),),
    ends_after_days=60,
)

RENEWAL = CampaignPlan(
    key="demo-renewal",
    name="Renewal by expiry window",
    kind="renewal",
    description="Members split by expiry window, each window with its own copy and benefit "
    "(against one flat discount for everyone).",
    channels=("email", "sms"),
    include_layers=("expiry:expired_recently", "expiry:expiring_soon", "expiry:valid"),
    split_dimension="expiry",
    experiment=ExperimentPlan(
        key="demo-renewal-offer",
        name="Renewal: per-window offer vs one flat discount",
        hypothesis="Copy and benefit per expiry window lift renewals of members expiring soon and of those "
        "who just lapsed; members valid for months do not care yet.",
        variants=_variants(
            "No renewal message", ("by_window", "Per-window offer"), ("flat_discount", "10% for everyone")
        ),
        metric="membership_renewed",
        window_hours=14 * 24,
        confirmatory_dimensions=("expiry",),
        fixed_audience=True,
    ),
    treatments=(
        TreatmentPlan(
            "by_window",
            "demo-renew-comeback-25",
            (
                _email(
                    "Your membership lapsed: {{ offer.benefit }} to come back",
                    "We kept your benefits warm. Code {{ coupon.code }}: {{ offer.benefit }} until "
                    "{{ coupon.expires_at|date:'Y-m-d' }}.",
                ),
                _sms("Come back: {{ offer.benefit }} with {{ coupon.code }}"),
            ),
            layer="expiry:expired_recently",
        ),
        TreatmentPlan(
            "by_window",
            "demo-renew-early-20",
            (
                _email(
                    "Your membership ends soon: renew with {{ offer.benefit }}",
                    "Renew before it ends. Code {{ coupon.code }}: {{ offer.benefit }}.",
                ),
                _sms("Renew early: {{ offer.benefit }} with {{ coupon.code }}"),
            ),
            layer="expiry:expiring_soon",
        ),
        TreatmentPlan(
            "by_window",
            "demo-renew-month-free",
            (
                _email("A month on us when you extend", "Extend now and get {{ offer.benefit }}: {{ coupon.code }}."),
                _sms("{{ offer.benefit }} when you extend: {{ coupon.code }}"),
            ),
            layer="expiry:valid",
        ),
        TreatmentPlan(
            "flat_discount",
            "demo-renew-flat-10",
            (
                _email("{{ offer.benefit }}", "Renew your membership with {{ coupon.code }}: {{ offer.benefit }}."),
                _sms("{{ offer.benefit }} with {{ coupon.code }}"),
            ),
        ),
    ),
    evaluate_dimension="expiry",
    baseline={"expired_recently": 0.03, "expiring_soon": 0.06, "valid": 0.02},
    effects=(
        Effect("by_window", "expiring_soon", 0.15),
        Effect("by_window", "expired_recently", 0.10),
        Effect("flat_discount", "expiring_soon", 0.08),
    ),
)

WINBACK = CampaignPlan(
    key="demo-winback",
    name="Win-back recall",
    kind="winback",
    description="Churn-warning and churned customers who bought before and are not members, by the first channel "
    "that still reaches them: a comeback offer, or news without an offer.",
    channels=("email", "sms", "push"),
    include_layers=(
        "lifecycle:churn_warning",
        "lifecycle:churned",
        "journey:first_purchase",
        "journey:repeat_buyer",
        "journey:vip",
    ),
    exclude_layers=("expiry:expired_recently", "expiry:expiring_soon", "expiry:valid"),
    experiment=ExperimentPlan(
        key="demo-winback-offer",
        name="Win-back: comeback offer vs news only",
        hypothesis="A 20% comeback offer brings back customers past the churn-warning line while they are still "
        "warm; customers already churned do not respond to it, and news alone moves nobody.",
        variants=_variants(
            "No recall message", ("comeback_offer", "20% comeback offer"), ("news_only", "News, no offer")
        ),
        metric="order",
        window_hours=14 * 24,
        confirmatory_dimensions=("lifecycle",),
        fixed_audience=True,
    ),
    treatments=(
        TreatmentPlan(
            "comeback_offer",
            "demo-winback-20",
            (
                _email(
                    "We miss you: {{ offer.benefit }}",
                    "It has been a while. Code {{ coupon.code }} gives {{ offer.benefit }} until "
                    "{{ coupon.expires_at|date:'Y-m-d' }}.",
                ),
                _sms("We miss you: {{ offer.benefit }} with {{ coupon.code }}"),
                _push("{{ offer.name }}", "{{ offer.benefit }} with {{ coupon.code }}"),
            ),
        ),
        TreatmentPlan(
            "news_only",
            None,
            (
                _email("What's new since your last visit", "New arrivals and prices dropped on items you looked at."),
                _sms("New arrivals and lower prices since your last visit."),
                _push("What's new", "New arrivals and lower prices since your last visit."),
            ),
        ),
    ),
    evaluate_dimension="lifecycle",
    baseline={"churn_warning": 0.03, "churned": 0.01},
    effects=(Effect("comeback_offer", "churn_warning", 0.12),),
)

CAMPAIGNS: tuple[CampaignPlan, ...] = (NEW_USER, REFERRAL, RENEWAL, WINBACK)


# --- The sign-up wave after launch ----------------------------------------------------------


@dataclass(frozen=True)
class WavePlan:
    """New customers who sign up after the triggered campaigns launched (scaled with the
    business: ``per_10k`` per 10,000 customers)."""

    signups_per_10k: int = 300
    invitees_per_10k: int = 300
    invitees_per_inviter: int = 3
    super_referrer_invitees: int = 8  # one inviter past the cap, to show the cap in the audit

    def signups(self, customers: int) -> int:
        return customers * self.signups_per_10k // 10_000

    def invitees(self, customers: int) -> int:
        return customers * self.invitees_per_10k // 10_000


WAVE = WavePlan()
