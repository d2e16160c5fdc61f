"""Turning ``demo.plan`` into rows, the way a growth user would in the admin: tag rules and
rule segments through ``segments.services``, experiments through ``experiments.services``,
campaigns, their treatments and content through ``campaigns.services.configure`` (the same
door as the admin and the guided builder: per-kind defaults, content validation), launches
through ``campaigns.services.lifecycle``.

Every object is looked up by its key first and created only when missing, so running the
demo again changes nothing that exists (an edit made in the admin in between is kept).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign, Offer
from campaigns.services import assignments as campaign_assignments
from campaigns.services import configure, lifecycle
from demo.plan import (
    HOLDOUT_KEY,
    HOLDOUT_PERCENT,
    CampaignPlan,
    ExperimentPlan,
    OfferPlan,
    SegmentPlan,
    TagRulePlan,
)
from experiments import selectors as experiment_selectors
from experiments import services as experiment_services
from experiments.models import Experiment, Holdout
from segments.dimensions.value_rank import default_config as value_rank_default_config
from segments.models import Dimension, EventType, RecomputeRun, Role, Segment, TagRule
from segments.selectors import event_type_get, layer_ids_by_keys, layers_queryset
from segments.services.dimensions import dimension_create
from segments.services.ingestion import event_type_ensure
from segments.services.recompute import dimension_recompute
from segments.services.segments import segment_create
from segments.services.tags import tag_rule_create

GROWTH_USERNAME = "growth"  # created by ``manage.py demo_users``
# The demo's compressed experiment duration: every report is read once, by the analysis step,
# well after this (see ``demo.plan.ExperimentPlan``).
DEMO_HORIZON = dt.timedelta(seconds=1)


def growth_user() -> AbstractBaseUser | None:
    return get_user_model().objects.filter(username=GROWTH_USERNAME).first()


def _fail(what: str, exc: ValidationError | dict) -> RuntimeError:
    detail = exc.message_dict if isinstance(exc, ValidationError) and hasattr(exc, "error_dict") else exc
    return RuntimeError(f"demo: could not create {what}: {detail}")


def segments_ensure(*, plans: Sequence[SegmentPlan]) -> list[str]:
    """Create the rule segments that do not exist; return the keys created."""
    created = []
    existing = set(Segment.objects.filter(key__in=[p.key for p in plans]).values_list("key", flat=True))
    for plan in plans:
        if plan.key in existing:
            continue
        try:
            segment_create(
                key=plan.key, name=plan.name, rule=plan.rule, description=plan.description, created_by=growth_user()
            )
        except ValidationError as exc:
            raise _fail(f"segment {plan.key}", exc) from exc
        created.append(plan.key)
    return created


def tag_rules_ensure(*, plans: Sequence[TagRulePlan]) -> list[str]:
    """Create the tag rules that do not exist (before the segments: rules name tags);
    return the codes created."""
    created = []
    existing = set(TagRule.objects.filter(tag__code__in=[p.code for p in plans]).values_list("tag__code", flat=True))
    for plan in plans:
        if plan.code in existing:
            continue
        try:
            tag_rule_create(
                code=plan.code,
                name=plan.name,
                family=plan.family,
                rule=plan.rule,
                description=plan.description,
                created_by=growth_user(),
            )
        except ValidationError as exc:
            raise _fail(f"tag rule {plan.code}", exc) from exc
        created.append(plan.code)
    return created


def holdout_ensure() -> Holdout:
    holdout = Holdout.objects.filter(key=HOLDOUT_KEY).first()
    if holdout is None:
        holdout = experiment_services.holdout_create(
            key=HOLDOUT_KEY, name="Demo global holdout", percent=HOLDOUT_PERCENT
        )
    return holdout


def offers_ensure(*, plans: Sequence[OfferPlan]) -> dict[str, Offer]:
    offers = {o.key: o for o in Offer.objects.filter(key__in=[p.key for p in plans])}
    for plan in plans:
        if plan.key in offers:
            continue
        try:
            offer = configure.offer_create(
                key=plan.key,
                name=plan.name,
                benefit_kind=plan.benefit_kind,
                value=plan.value,
                currency=plan.currency,
                code_prefix=plan.code_prefix,
                code_source=plan.code_source,
                validity_days=plan.validity_days,
                expires_after_membership_days=plan.expires_after_membership_days,
            )
        except ValidationError as exc:
            raise _fail(f"offer {plan.key}", exc) from exc
        offers[plan.key] = offer
    return offers


def _market_rates() -> dict[str, str]:
    """1 unit of a market's currency in EUR: the inverse of the generator's price scale."""
    from demo.generator import MARKETS

    return {m.currency: f"{1.0 / m.price_scale:.6f}" for m in MARKETS if m.currency != "EUR"}


def experiment_ensure(*, plan: ExperimentPlan, holdout: Holdout | None) -> Experiment:
    """Create (draft) and start the experiment unless it exists; start it if still a draft."""
    experiment = experiment_selectors.experiment_get(key=plan.key)
    if experiment is None:
        try:
            experiment = experiment_services.experiment_create(
                key=plan.key,
                name=plan.name,
                hypothesis=plan.hypothesis,
                owner=growth_user(),
                variants=[
                    experiment_services.VariantSpec(key=v.key, name=v.name, weight=v.weight, is_control=v.is_control)
                    for v in plan.variants
                ],
                targeting=experiment_services.Targeting(holdout_id=holdout.pk if holdout else None),
                metrics=[experiment_services.MetricSpec(event_type_code=plan.metric, window_hours=plan.window_hours)]
                + (
                    [
                        experiment_services.MetricSpec(
                            event_type_code=plan.metric,
                            role="secondary",
                            window_hours=plan.window_hours,
                            kind="sum",
                        )
                    ]
                    if plan.value_metric
                    else []
                )
                # The guardrails its campaign watches, declared before the start records the
                # plan: launching the campaign (after this start) would add them to a running
                # experiment, and every report would say its metrics changed after the plan.
                + [
                    experiment_services.MetricSpec(event_type_code=code, role="guardrail")
                    for code in campaign_assignments.GUARDRAIL_EVENTS
                ],
                minimum_detectable_effect=plan.minimum_detectable_effect,
                plan={
                    "confirmatory_dimensions": list(plan.confirmatory_dimensions),
                    "fixed_audience": plan.fixed_audience,
                    "inference_mode": plan.inference_mode,
                    "planned_end_at": timezone.now() + DEMO_HORIZON if plan.inference_mode == "fixed" else None,
                    # Revenue across the demo's markets: reported in EUR, other currencies
                    # converted at the declared rate (the generator's price scale).
                    **({"reporting_currency": "EUR", "currency_rates": _market_rates()} if plan.value_metric else {}),
                },
            )
        except ValidationError as exc:
            raise _fail(f"experiment {plan.key}", exc) from exc
    if experiment.status == Experiment.Status.DRAFT:
        if experiment.planned_end_at is not None and experiment.planned_end_at <= timezone.now():
            experiment = experiment_services.experiment_plan_update(
                experiment=experiment, changes={"planned_end_at": timezone.now() + DEMO_HORIZON}
            )
        experiment = experiment_services.experiment_start(experiment=experiment)
    return experiment


def _pks(model: type, keys: Sequence[str]) -> list[int]:
    found = dict(model.objects.filter(key__in=keys).values_list("key", "pk"))  # type: ignore[attr-defined]
    missing = sorted(set(keys) - set(found))
    if missing:
        raise RuntimeError(f"demo: unknown {model.__name__.lower()} key(s): {', '.join(missing)}")
    return [found[k] for k in keys]


def _layer_pks(keys: Sequence[str]) -> list[int]:
    found = layer_ids_by_keys(keys=keys)
    missing = sorted(set(keys) - set(found))
    if missing:
        raise RuntimeError(f"demo: unknown layer(s): {', '.join(missing)}")
    return [found[k] for k in keys]


def _event_type(code: str | None) -> EventType | None:
    if not code:
        return None
    event_type = event_type_get(code=code)
    if event_type is None:
        raise RuntimeError(f"demo: unknown event type {code}")
    return event_type


@transaction.atomic
def campaign_ensure(*, plan: CampaignPlan, experiment: Experiment, offers: dict[str, Offer]) -> Campaign:
    """Create the campaign (draft) with its treatments and content unless it exists."""
    campaign = Campaign.objects.filter(key=plan.key).first()
    if campaign is not None:
        return campaign
    now = timezone.now()
    config = {
        "description": plan.description,
        "experiment": experiment,
        "include_layers": _layer_pks(plan.include_layers),
        "exclude_layers": _layer_pks(plan.exclude_layers),
        "exclude_segments": [Segment.objects.get(key=k).pk for k in plan.exclude_segments],
        "split_dimension": Dimension.objects.get(key=plan.split_dimension) if plan.split_dimension else None,
        "trigger": plan.trigger,
        "trigger_event_type": _event_type(plan.trigger_event),
        "trigger_within_hours": plan.trigger_within_hours or None,
        "channels": list(plan.channels),
        "channel_strategy": Campaign.ChannelStrategy.FIRST_REACHABLE,
        "ends_at": now + dt.timedelta(days=plan.ends_after_days),
        "max_attempts": 5,
        "referral_reward_to": plan.referral_reward_to,
        "referral_qualifying_event_type": _event_type(plan.referral_qualifying_event),
        "referral_cap_per_inviter": plan.referral_cap_per_inviter or None,
    }
    try:
        campaign = configure.campaign_create(
            key=plan.key, name=plan.name, kind=plan.kind, config=config, created_by=growth_user()
        )
        for t in plan.treatments:
            treatment = configure.treatment_set(
                campaign=campaign,
                variant_key=t.variant_key,
                layer=layers_queryset(ids=_layer_pks([t.layer])).get() if t.layer else None,
                referral_role=t.role,
                offer=offers[t.offer_key] if t.offer_key else None,
                fallback=not (t.variant_key or t.layer or t.offer_key),
            )
            for c in t.contents:
                configure.content_set(
                    treatment=treatment, channel=c.channel, subject=c.subject, title=c.title, text=c.text, html=c.html
                )
    except ValidationError as exc:
        raise _fail(f"campaign {plan.key}", exc) from exc
    return campaign


@dataclass(frozen=True)
class Launch:
    key: str
    launched: bool  # False: it was running already


def campaigns_launch(*, campaigns: Sequence[Campaign]) -> list[Launch]:
    """Launch the drafts (the launch validates everything first); leave the others alone."""
    results = []
    for campaign in campaigns:
        campaign.refresh_from_db()
        if campaign.status not in (Campaign.Status.DRAFT, Campaign.Status.SCHEDULED):
            results.append(Launch(campaign.key, False))
            continue
        try:
            lifecycle.campaign_launch(campaign=campaign)
        except ValidationError as exc:
            raise _fail(f"launch of {campaign.key}", exc) from exc
        results.append(Launch(campaign.key, True))
    return results


# --- The value pyramid and the tier history the analytics pages read --------------------------

VALUE_PYRAMID_KEY = "value_pyramid"
SELLER_PYRAMID_KEY = "seller_pyramid"
HISTORY_DIMENSIONS = ("rfm", VALUE_PYRAMID_KEY, SELLER_PYRAMID_KEY)
HISTORY_MONTHS = 12
# The seller side of the demo's marketplace (demo.generator): a sale made by a seller.
SALE_EVENT = "sale"


def marketplace_event_types_ensure() -> bool:
    """The ``sale`` event type the seller side records (before its events are imported);
    True when created by this call."""
    _, created = event_type_ensure(code=SALE_EVENT, name="Sale (as a seller)", is_monetary=True)
    return created


def value_pyramid_ensure() -> list[str]:
    """Two value pyramids, one per side of the marketplace (docs/domain.md: two-sided
    platforms layer each role separately), through the one door for dimensions: buyers by
    spend (``order``), sellers by sales (``sale``), each the top 1% / 10% / 30% of a year
    *of that role's holders*. Returns the keys created by this call."""
    created = []
    roles = {r.key: r for r in Role.objects.filter(key__in=("buyer", "seller"))}
    if not Dimension.objects.filter(key=VALUE_PYRAMID_KEY).exists():
        dimension_create(
            key=VALUE_PYRAMID_KEY,
            name="Buyer value pyramid (spend over 365 days)",
            kind="value_rank",
            role=roles.get("buyer"),
        )
        created.append(VALUE_PYRAMID_KEY)
    if not Dimension.objects.filter(key=SELLER_PYRAMID_KEY).exists():
        config = value_rank_default_config()
        config["measure"] = {"event_type": SALE_EVENT, "agg": "sum", "window_days": 365}
        dimension_create(
            key=SELLER_PYRAMID_KEY,
            name="Seller value pyramid (sales over 365 days)",
            kind="value_rank",
            config=config,
            role=roles.get("seller"),
        )
        created.append(SELLER_PYRAMID_KEY)
    return created


def history_as_of(*, now: dt.datetime) -> list[dt.datetime]:
    """The last instant (UTC) of each of the ``HISTORY_MONTHS`` calendar months before
    ``now``'s, oldest first. Steps of 30.44 days, as before, put two recomputes in one month
    and none in another on some days (run on 1 March: 30 January, then 1 March), leaving a
    month without moves on the flows page."""
    month = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    ends = []
    for _ in range(HISTORY_MONTHS):
        ends.append(month - dt.timedelta(microseconds=1))
        month = (month - dt.timedelta(days=1)).replace(day=1)
    return ends[::-1]


def tier_history_backfill(*, now: dt.datetime) -> int:
    """Recompute the tier dimensions as of each month-end of the last ``HISTORY_MONTHS``
    months, oldest first, so the layer history holds a year of moves: the flows page and the
    "layer at cohort start" breakdowns then read real history instead of one day's placement.
    Only on a fresh database (a recompute never goes back before the last one); returns the
    number of recomputes run."""
    keys = [
        key
        for key in HISTORY_DIMENSIONS
        if not RecomputeRun.objects.filter(target=f"dimension:{key}", status=RecomputeRun.Status.SUCCEEDED).exists()
    ]
    runs = 0
    for as_of in history_as_of(now=now):
        for key in keys:
            outcome = dimension_recompute(
                dimension_id=Dimension.objects.get(key=key).pk, as_of=as_of, trigger=RecomputeRun.Trigger.COMMAND
            )
            if outcome.status != "succeeded":
                raise RuntimeError(f"demo: backfill of {key} as of {as_of:%Y-%m-%d} failed: {outcome.error}")
            runs += 1
    return runs
