"""Turning ``demo.plan`` into rows, the way a growth user would in the admin: rule segments
through ``segments.services``, experiments through ``experiments.services``, campaigns
through the admin's ``CampaignForm`` / ``ContentForm`` (their per-kind defaults and content
validation), launches through ``campaigns.services.lifecycle``.

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

from campaigns.forms import CampaignForm, ContentForm
from campaigns.models import Campaign, Content, Offer, Treatment
from campaigns.services import lifecycle
from demo.plan import HOLDOUT_KEY, HOLDOUT_PERCENT, CampaignPlan, ExperimentPlan, OfferPlan, SegmentPlan
from experiments import selectors as experiment_selectors
from experiments import services as experiment_services
from experiments.models import Experiment, Holdout
from segments.models import Dimension, EventType, Segment
from segments.selectors import layer_ids_by_keys
from segments.services.segments import segment_create

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
        offer = Offer(
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
        try:
            offer.full_clean()
        except ValidationError as exc:
            raise _fail(f"offer {plan.key}", exc) from exc
        offer.save()
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
                ),
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


def _event_type_pk(code: str | None) -> int | str:
    if not code:
        return ""
    pk = EventType.objects.filter(code=code).values_list("pk", flat=True).first()
    if pk is None:
        raise RuntimeError(f"demo: unknown event type {code}")
    return pk


@transaction.atomic
def campaign_ensure(*, plan: CampaignPlan, experiment: Experiment, offers: dict[str, Offer]) -> Campaign:
    """Create the campaign (draft) with its treatments and content unless it exists."""
    campaign = Campaign.objects.filter(key=plan.key).first()
    if campaign is not None:
        return campaign
    now = timezone.now()
    data = {
        "key": plan.key,
        "name": plan.name,
        "kind": plan.kind,
        "description": plan.description,
        "experiment": experiment.pk,
        "include_layers": _layer_pks(plan.include_layers),
        "exclude_layers": _layer_pks(plan.exclude_layers),
        "exclude_segments": [Segment.objects.get(key=k).pk for k in plan.exclude_segments],
        "split_dimension": Dimension.objects.get(key=plan.split_dimension).pk if plan.split_dimension else "",
        "trigger": plan.trigger,
        "trigger_event_type": _event_type_pk(plan.trigger_event),
        "trigger_within_hours": plan.trigger_within_hours or "",
        "channels": ", ".join(plan.channels),
        "channel_strategy": Campaign.ChannelStrategy.FIRST_REACHABLE,
        "ends_at": (now + dt.timedelta(days=plan.ends_after_days)).strftime("%Y-%m-%d %H:%M:%S"),
        "max_attempts": 5,
        "referral_reward_to": plan.referral_reward_to,
        "referral_qualifying_event_type": _event_type_pk(plan.referral_qualifying_event),
        "referral_cap_per_inviter": plan.referral_cap_per_inviter or "",
    }
    form = CampaignForm(data=data)
    if not form.is_valid():
        raise _fail(f"campaign {plan.key}", form.errors.get_json_data())
    campaign = form.save(commit=False)
    campaign.created_by = growth_user()
    campaign.save()
    form.save_m2m()
    for t in plan.treatments:
        treatment = Treatment(
            campaign=campaign,
            variant_key=t.variant_key,
            layer_id=_layer_pks([t.layer])[0] if t.layer else None,
            referral_role=t.role,
            offer=offers[t.offer_key] if t.offer_key else None,
        )
        treatment.full_clean()
        treatment.save()
        for c in t.contents:
            content_form = ContentForm(
                data={"channel": c.channel, "subject": c.subject, "title": c.title, "text": c.text, "html": c.html},
                instance=Content(treatment=treatment),
            )
            if not content_form.is_valid():
                raise _fail(f"{plan.key} {c.channel} content", content_form.errors.get_json_data())
            content_form.save()
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
