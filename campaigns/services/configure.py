"""Configuring a campaign: the one door for creating it and for writing what it gives.

Every configuration rule lives here (and, for edits of an existing campaign, in
``campaigns.services.editing``): the per-kind defaults (a new-user incentive listens to
``signup`` within 48 h, a referral to ``referral_signup``), the topic chosen by kind, the
trigger's required fields, the channel list, the campaign's *own* experiment, treatments
and content. The admin's forms, the guided builder, the demo and tests call these
services; a form only collects and shows the ``ValidationError`` next to its field.
(Before, the rules were in ``CampaignForm.clean`` and the demo had to build admin forms
to get them: a rule written in a form drifts from the one in the service.)

A campaign's own experiment (``own_experiment``) is created with the campaign, in the same
transaction, and claimed for it at once (``Experiment.managed_by``): nobody else assigns in
it, and a second campaign cannot take it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from campaigns import kinds
from campaigns.models import Campaign, Content, Offer, Topic, Treatment
from campaigns.services import assignments
from campaigns.services.editing import offer_write_check, treatments_write_check
from campaigns.services.render import content_check
from segments import selectors as segment_selectors

# Channels a campaign may list (segments' ``Channel`` values), read through the model field's
# choices so this module needs nothing but the campaigns models.
_CHANNELS: tuple[str, ...] = tuple(value for value, _ in Content._meta.get_field("channel").choices)

# The configuration fields ``campaign_create`` accepts besides key, name and kind.
CONFIG_FIELDS: tuple[str, ...] = (
    "description",
    "experiment",
    "include_segments",
    "exclude_segments",
    "include_layers",
    "exclude_layers",
    "split_dimension",
    "trigger",
    "trigger_event_type",
    "trigger_layer",
    "trigger_within_hours",
    "channels",
    "channel_strategy",
    "is_transactional",
    "topic",
    "send_at",
    "ends_at",
    "max_attempts",
    "referral_reward_to",
    "referral_qualifying_event_type",
    "referral_cap_per_inviter",
)
M2M_FIELDS: tuple[str, ...] = ("include_segments", "exclude_segments", "include_layers", "exclude_layers")


def channels_check(*, channels: Sequence[str]) -> list[str]:
    """The channel list as given, or ``ValidationError`` on ``channels``."""
    items = list(channels)
    unknown = [item for item in items if item not in _CHANNELS]
    if unknown:
        raise ValidationError(
            {"channels": f"Unknown channel(s): {', '.join(map(str, unknown))}. Use: {', '.join(_CHANNELS)}."}
        )
    if len(set(items)) != len(items):
        raise ValidationError({"channels": "List each channel once."})
    return items


def campaign_config_clean(*, kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration with the kind's defaults filled in, or ``ValidationError`` by field.

    Used by ``campaign_create`` and by the admin's campaign form (which shows the errors
    next to their fields); an event or layer field is a model instance or ``None``."""
    data = dict(config)
    errors: dict[str, list[str]] = {}
    known = kind in kinds.KINDS
    if not data.get("topic"):
        # The kind's own topic and trigger defaults (``campaigns.kinds``, one module per kind).
        data["topic"] = kinds.topic_for(kind) if known else Topic.PROMOTIONS
    if "channels" in data:
        try:
            data["channels"] = channels_check(channels=data.get("channels") or [])
        except ValidationError as exc:
            errors.update(exc.message_dict)
    defaults = kinds.trigger_defaults(kind) if known else None
    if defaults:
        if data.get("trigger") in (None, "", Campaign.Trigger.BROADCAST):
            data["trigger"] = defaults.trigger
        if data.get("trigger_event_type") is None:
            data["trigger_event_type"] = segment_selectors.event_type_get(code=defaults.event_type_code)
        if data.get("trigger_within_hours") is None and defaults.within_hours:
            data["trigger_within_hours"] = defaults.within_hours
    if kind == Campaign.Kind.REFERRAL and data.get("referral_qualifying_event_type") is None:
        data["referral_qualifying_event_type"] = data.get("trigger_event_type")
    if data.get("trigger") == Campaign.Trigger.EVENT and data.get("trigger_event_type") is None:
        errors.setdefault("trigger_event_type", []).append("An event trigger needs an event type.")
    if data.get("trigger") == Campaign.Trigger.LAYER_ENTRY and data.get("trigger_layer") is None:
        errors.setdefault("trigger_layer", []).append("A layer-entry trigger needs a layer.")
    if errors:
        raise ValidationError(errors)
    return data


@dataclass(frozen=True)
class OwnExperiment:
    """The experiment a campaign creates for itself: its variants (one control), the metric
    its report reads and, optionally, the global holdout it respects."""

    variants: Sequence[Any]  # experiments.services.VariantSpec
    metric: str  # event type code, e.g. "order"
    window_hours: int = 7 * 24
    holdout_id: int | None = None
    hypothesis: str = ""
    minimum_detectable_effect: Decimal | None = None
    plan: Mapping[str, Any] = field(default_factory=dict)


@transaction.atomic
def campaign_create(
    *,
    key: str,
    name: str,
    kind: str = Campaign.Kind.CUSTOM,
    config: Mapping[str, Any] | None = None,
    own_experiment: OwnExperiment | None = None,
    created_by: Any = None,
) -> Campaign:
    """A draft campaign; with ``own_experiment`` also its experiment (draft, key = the
    campaign's key, claimed for the campaign). Many-to-many fields take instances or ids."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        raise ValidationError({name_: "Not a campaign configuration field." for name_ in unknown})
    if own_experiment is not None and config.get("experiment") is not None:
        raise ValidationError({"experiment": "Give either an existing experiment or the campaign's own one, not both."})
    data = campaign_config_clean(kind=kind, config=config)
    m2m = {name_: data.pop(name_) for name_ in M2M_FIELDS if name_ in data}
    campaign = Campaign(
        key=key, name=name, kind=kind, created_by=created_by if getattr(created_by, "pk", None) else None, **data
    )
    campaign.full_clean()
    if own_experiment is not None:
        from experiments import services as experiment_services

        if own_experiment.metric and segment_selectors.event_type_get(code=own_experiment.metric) is None:
            raise ValidationError({"metric": f"Unknown event type '{own_experiment.metric}'."})
        try:
            campaign.experiment = experiment_services.experiment_create(
                key=key,
                name=name,
                hypothesis=own_experiment.hypothesis,
                owner=campaign.created_by,
                variants=own_experiment.variants,
                targeting=experiment_services.Targeting(holdout_id=own_experiment.holdout_id),
                metrics=[
                    experiment_services.MetricSpec(
                        event_type_code=own_experiment.metric, window_hours=own_experiment.window_hours
                    )
                ],
                minimum_detectable_effect=own_experiment.minimum_detectable_effect,
                plan=dict(own_experiment.plan) or None,
            )
        except ValidationError as exc:
            # The experiment's "key" and "variants" are the campaign's here: name them so.
            raise ValidationError(_prefixed(exc, "experiment")) from exc
    campaign.save()
    for name_, value in m2m.items():
        getattr(campaign, name_).set(value)
    if own_experiment is not None:
        assignments.experiment_claim(experiment=campaign.experiment, campaign_id=campaign.pk)
    return campaign


def _prefixed(exc: ValidationError, prefix: str) -> dict[str, list[str]]:
    if not hasattr(exc, "error_dict"):
        return {prefix: exc.messages}
    return {
        (name if name in ("variants", "metric") else prefix): messages for name, messages in exc.message_dict.items()
    }


@transaction.atomic
def campaign_own_experiment_start(*, campaign: Campaign) -> Campaign:
    """Start the campaign's own draft experiment (the builder's launch does it first: an
    experiment the campaign created is the campaign's to start)."""
    from experiments import services as experiment_services

    row = Campaign.objects.select_related("experiment").get(pk=campaign.pk)
    if _is_own_draft_experiment(row):
        experiment_services.experiment_start(experiment=row.experiment)
    return row


BLANK_TREATMENT_MESSAGE = (
    "A treatment row is blank (any variant × any layer, no offer): choose its variant, layer or offer, or remove "
    "the row. (A content-only treatment: choose its variant or layer; its content is written on the treatment's "
    "own page. The fallback for every treated variant and layer is the builder's 'any layer' cell.)"
)


def treatment_row_check(*, variant_key: str, layer: Any, offer: Any, fallback: bool = False) -> None:
    """A row with no variant, no layer and no offer is an error unless it is the explicit
    fallback: never silently dropped (as a blank admin row was) nor silently kept."""
    if not variant_key and layer is None and offer is None and not fallback:
        raise ValidationError({"treatments": BLANK_TREATMENT_MESSAGE})


@transaction.atomic
def treatment_set(
    *,
    campaign: Campaign,
    variant_key: str = "",
    layer: Any = None,
    referral_role: str = "",
    offer: Offer | None = None,
    fallback: bool = False,
    version_started: bool = False,
) -> Treatment:
    """Create or update what (variant, layer, role) of ``campaign`` receives.

    A row with no variant, no layer and no offer is refused unless ``fallback=True``: it
    would be the "any variant × any layer" treatment every treated customer falls back to,
    and a form row left blank must not become that, nor vanish, without the author saying
    so. The control variant is treated only by a row that names it."""
    treatments_write_check(campaign=campaign, version_started=version_started)
    treatment_row_check(variant_key=variant_key, layer=layer, offer=offer, fallback=fallback)
    row = Treatment.objects.filter(
        campaign=campaign, variant_key=variant_key, layer=layer, referral_role=referral_role
    ).first() or Treatment(campaign=campaign, variant_key=variant_key, layer=layer, referral_role=referral_role)
    row.offer = offer
    if layer is not None and campaign.split_dimension_id != layer.dimension_id:
        raise ValidationError({"layer": f"Layer '{layer}' is not a layer of the campaign's split dimension."})
    row.full_clean(validate_unique=False)
    row.save()
    return row


@transaction.atomic
def content_set(
    *,
    treatment: Treatment,
    channel: str,
    subject: str = "",
    title: str = "",
    text: str = "",
    html: str = "",
    version_started: bool = False,
) -> Content:
    """Create or update ``treatment``'s message for ``channel``, checked against the
    variables the treatment provides (``ValidationError`` naming the field)."""
    treatments_write_check(campaign=treatment.campaign, version_started=version_started)
    row = Content.objects.filter(treatment=treatment, channel=channel).first() or Content(
        treatment=treatment, channel=channel
    )
    row.subject, row.title, row.text, row.html = subject, title, text, html
    row.full_clean(exclude=["treatment"], validate_unique=False)
    content_check(content=row)
    row.save()
    return row


@transaction.atomic
def content_delete(*, treatment: Treatment, channel: str, version_started: bool = False) -> int:
    treatments_write_check(campaign=treatment.campaign, version_started=version_started)
    deleted, _ = Content.objects.filter(treatment=treatment, channel=channel).delete()
    return deleted


OFFER_FIELDS: tuple[str, ...] = (
    "benefit_kind",
    "value",
    "currency",
    "code_source",
    "code_prefix",
    "valid_from",
    "valid_until",
    "validity_days",
    "expires_after_membership_days",
)


@transaction.atomic
def offer_create(*, key: str, name: str, **fields: Any) -> Offer:
    """A new offer, validated (``ValidationError`` by field)."""
    unknown = sorted(set(fields) - set(OFFER_FIELDS))
    if unknown:
        raise ValidationError({name_: "Not an offer field." for name_ in unknown})
    offer = Offer(key=key, name=name, **fields)
    offer.full_clean()
    offer.save()
    return offer


@transaction.atomic
def offer_update(*, offer: Offer, changes: Mapping[str, Any]) -> Offer:
    """Change an offer no live campaign gives (what was promised is kept)."""
    offer_write_check(offer=offer)
    for name_, value in changes.items():
        if name_ not in (*OFFER_FIELDS, "name"):
            raise ValidationError({name_: "Not an offer field."})
        setattr(offer, name_, value)
    offer.full_clean()
    offer.save()
    return offer


def _is_own_draft_experiment(campaign: Campaign) -> bool:
    experiment = campaign.experiment
    return (
        experiment is not None
        and experiment.status == "draft"
        and experiment.managed_by == assignments.manager_tag(campaign.pk)
    )


def campaign_launch_checklist(*, campaign: Campaign) -> list[tuple[str, str]]:
    """What still refuses the launch, as (field, message) pairs; empty when ready. The same
    checks as ``campaign_launch`` (``lifecycle.campaign_validate`` at launch), except that
    the campaign's own draft experiment is not a problem: the builder's launch starts it."""
    from campaigns.services.lifecycle import campaign_validate

    row = Campaign.objects.select_related("experiment").get(pk=campaign.pk)
    try:
        campaign_validate(campaign=row, at_launch=True)
    except ValidationError as exc:
        own_draft = _is_own_draft_experiment(row)
        return [
            (name, message)
            for name, messages in exc.message_dict.items()
            for message in messages
            if not (own_draft and name == "experiment" and message.endswith("start it first."))
        ]
    return []


@transaction.atomic
def campaign_builder_launch(*, campaign: Campaign) -> Campaign:
    """Launch a campaign built with its own experiment: start the experiment, then launch,
    all or nothing (a refused launch leaves the experiment a draft)."""
    from campaigns.services.lifecycle import campaign_launch

    row = campaign_own_experiment_start(campaign=campaign)
    return campaign_launch(campaign=Campaign.objects.select_related("experiment").get(pk=row.pk))


@transaction.atomic
def treatment_delete(*, treatment: Treatment, version_started: bool = False) -> None:
    treatments_write_check(campaign=treatment.campaign, version_started=version_started)
    treatment.delete()
