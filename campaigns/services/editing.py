"""Changing a campaign: the one door for edits of its configuration once it exists.

A draft changes freely. From ``scheduled`` on, what decides who gets what is read-only:
the audience (segments, layers, split dimension), the experiment, the trigger, the
channels, the treatments (variants × layers × offers), their content and the offers they
give. Measured before this rule: a running campaign accepted swapping its experiment for
another campaign's, an extra segment, and a channel with no content, and the playbook then
credited one campaign with another's win.

A change to a live campaign is a *new version*: the configuration in force is kept in a
``CampaignVersion`` row (with the experiment phase it was analysed in), the experiment
starts a new phase (everyone is re-randomized and the report analyses the new phase only,
so the versions are never pooled), and the campaign's ``version`` goes up. The new version
applies to decisions made from then on (triggered campaigns; a broadcast not yet resolved).
The experiment and the kind never change, not even in a new version: a different
experiment is a different campaign ("Duplicate as draft"). A finished campaign is history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from campaigns.models import Campaign, CampaignVersion, Content, Offer, Treatment

LOCKED_FIELDS: tuple[str, ...] = (
    "kind",
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
    "referral_reward_to",
    "referral_qualifying_event_type",
    "referral_cap_per_inviter",
)
NEVER_CHANGED_ONCE_LIVE: tuple[str, ...] = ("kind", "experiment")
M2M_FIELDS: tuple[str, ...] = ("include_segments", "exclude_segments", "include_layers", "exclude_layers")
LOCKED_MESSAGE = (
    "Read-only since the campaign was scheduled ({status}). Use 'Edit as a new version' to change it: "
    "the current configuration is kept and the experiment starts a new phase."
)


def _comparable(name: str, value: Any) -> Any:
    if name in M2M_FIELDS:
        return frozenset(item.pk if isinstance(item, Model) else int(item) for item in value)
    if isinstance(value, Model):
        return value.pk
    if isinstance(value, list):
        return tuple(value)
    return value


def _current(campaign: Campaign, name: str) -> Any:
    if name in M2M_FIELDS:
        return frozenset(getattr(campaign, name).values_list("pk", flat=True))
    field = Campaign._meta.get_field(name)
    if field.is_relation:
        return getattr(campaign, field.attname)
    value = getattr(campaign, name)
    return tuple(value) if isinstance(value, list) else value


def changed_fields(*, campaign: Campaign, changes: Mapping[str, Any]) -> list[str]:
    """The names in ``changes`` whose value differs from the stored campaign's."""
    return [name for name, value in changes.items() if _comparable(name, value) != _current(campaign, name)]


def campaign_update_check(*, campaign: Campaign, changes: Mapping[str, Any], new_version: bool = False) -> None:
    """Raise ``ValidationError`` by field for changes the campaign's status forbids. Forms
    call it to show the message next to the field; ``campaign_update`` calls it again
    under the row lock."""
    if not campaign.is_locked:
        return
    changed = set(changed_fields(campaign=campaign, changes=changes))
    errors: dict[str, list[str]] = {}
    if campaign.status == Campaign.Status.FINISHED:
        for name in sorted(changed & set(LOCKED_FIELDS)):
            errors[name] = ["A finished campaign is history; use 'Duplicate as draft' to run it again."]
    else:
        for name in sorted(changed & set(NEVER_CHANGED_ONCE_LIVE)):
            errors[name] = [
                "Fixed once the campaign is scheduled, even in a new version: a different experiment or kind "
                "is a different campaign ('Duplicate as draft')."
            ]
        if not new_version:
            for name in sorted(changed & (set(LOCKED_FIELDS) - set(NEVER_CHANGED_ONCE_LIVE))):
                errors[name] = [LOCKED_MESSAGE.format(status=campaign.status)]
    if errors:
        raise ValidationError(errors)


def config_snapshot(*, campaign: Campaign) -> dict[str, Any]:
    """The configuration in force, as plain JSON (ids and the texts that were sent)."""
    config: dict[str, Any] = {}
    for name in LOCKED_FIELDS:
        value = _current(campaign, name)
        config[name] = (
            sorted(value) if isinstance(value, frozenset) else (list(value) if isinstance(value, tuple) else value)
        )
    contents: dict[int, dict[str, dict[str, str]]] = {}
    for c in Content.objects.filter(treatment__campaign=campaign):
        contents.setdefault(c.treatment_id, {})[c.channel] = {
            "subject": c.subject,
            "title": c.title,
            "text": c.text,
            "html": c.html,
        }
    config["treatments"] = [
        {
            "variant_key": t.variant_key,
            "layer": t.layer_id,
            "referral_role": t.referral_role,
            "offer": t.offer_id,
            "offer_key": t.offer.key if t.offer_id else None,
            "contents": contents.get(t.pk, {}),
        }
        for t in Treatment.objects.filter(campaign=campaign).select_related("offer").order_by("pk")
    ]
    return config


def _phase_number(campaign: Campaign) -> int | None:
    if campaign.experiment_id is None:
        return None
    from experiments import selectors as experiment_selectors

    config = experiment_selectors.experiment_config_get(experiment_id=campaign.experiment_id)
    return config.phase_number if config is not None else None


@transaction.atomic
def campaign_version_start(*, campaign: Campaign, user: Any = None, note: str = "") -> Campaign:
    """Keep the configuration in force as version N, start a new experiment phase, and make
    the campaign version N+1. Call before changing a live campaign's configuration."""
    row = Campaign.objects.select_for_update(of=("self",)).select_related("experiment").get(pk=campaign.pk)
    if not row.is_locked:
        return row  # a draft has no history to keep
    if row.status == Campaign.Status.FINISHED:
        raise ValidationError({"status": "A finished campaign is history; use 'Duplicate as draft' to run it again."})
    CampaignVersion.objects.create(
        campaign=row,
        number=row.version,
        config=config_snapshot(campaign=row),
        experiment_phase=_phase_number(row),
        replaced_by=user if getattr(user, "pk", None) else None,
        note=note,
    )
    if row.experiment is not None and row.experiment.is_active:
        from experiments import services as experiment_services

        experiment_services.experiment_new_phase(
            experiment=row.experiment, reason=f"campaign {row.key}: version {row.version + 1}"
        )
    row.version += 1
    row.save(update_fields=["version", "updated_at"])
    campaign.version = row.version
    return row


@transaction.atomic
def campaign_update(
    *,
    campaign: Campaign,
    changes: Mapping[str, Any],
    new_version: bool = False,
    version_started: bool = False,
    user: Any = None,
) -> Campaign:
    """Apply ``changes`` ({field name: value}; many-to-many fields take instances or ids).

    A draft takes anything. A live campaign takes its locked fields only with
    ``new_version=True`` (which starts the version unless the caller already did:
    ``version_started``), and the result must still pass the launch checks."""
    from campaigns.services.lifecycle import campaign_validate

    row = Campaign.objects.select_for_update().get(pk=campaign.pk)
    campaign_update_check(campaign=row, changes=changes, new_version=new_version)
    changed = changed_fields(campaign=row, changes=changes)
    if not changed:
        return row
    locked_change = row.is_locked and bool(set(changed) & set(LOCKED_FIELDS))
    if locked_change and not version_started:
        row = campaign_version_start(campaign=row, user=user)
    m2m = {name: changes[name] for name in changed if name in M2M_FIELDS}
    for name in changed:
        if name not in M2M_FIELDS:
            setattr(row, name, changes[name])
    row.full_clean()
    row.save()
    for name, value in m2m.items():
        getattr(row, name).set(value)
    if locked_change:
        campaign_validate(campaign=row)
    return row


def treatments_write_check(*, campaign: Campaign, version_started: bool = False) -> None:
    """Treatments and content of a live campaign change only inside a new version."""
    row = Campaign.objects.only("status").get(pk=campaign.pk)
    if row.status == Campaign.Status.FINISHED:
        raise ValidationError({"treatments": "A finished campaign is history; use 'Duplicate as draft'."})
    if row.is_locked and not version_started:
        raise ValidationError({"treatments": LOCKED_MESSAGE.format(status=row.status)})


def campaign_delete_check(*, campaign: Campaign) -> None:
    """Only a draft can be deleted: from scheduled on, its recipients, deliveries, coupons and
    versions are the record of who was sent what (and the experiment's analysis reads them)."""
    status = Campaign.objects.filter(pk=campaign.pk).values_list("status", flat=True).first()
    if status is not None and status != Campaign.Status.DRAFT:
        raise ValidationError(
            f"{campaign.key}: only a draft can be deleted (this one is {status}); finish it, or use "
            "'Duplicate as draft' to start again."
        )


@transaction.atomic
def campaign_delete(*, campaign: Campaign) -> None:
    row = Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    if row is None:
        return
    campaign_delete_check(campaign=row)
    row.delete()


def offer_write_check(*, offer: Offer) -> None:
    """An offer a live (or finished) campaign gives is read-only: what was promised is kept."""
    users = list(
        Campaign.objects.filter(treatments__offer=offer)
        .exclude(status=Campaign.Status.DRAFT)
        .values_list("key", flat=True)
        .distinct()
    )
    if users:
        raise ValidationError(
            {"offer": f"Offer '{offer.key}' is given by campaign(s) {', '.join(sorted(users))}; create a new offer."}
        )


def offer_is_locked(*, offer: Offer) -> bool:
    try:
        offer_write_check(offer=offer)
    except ValidationError:
        return True
    return False


def _free_key(taken: Callable[[str], bool], base: str) -> str:
    base = base[:56]
    for n in range(1, 1000):
        key = f"{base}-copy" if n == 1 else f"{base}-copy{n}"
        if not taken(key):
            return key
    raise ValidationError({"key": f"No free key for a copy of '{base}'."})


@transaction.atomic
def campaign_duplicate(*, campaign: Campaign, user: Any = None) -> Campaign:
    """A draft copy of ``campaign`` (any status): audience, trigger, channels, treatments and
    content. Its experiment is copied too, as a new draft experiment with the same variants
    and metrics: an experiment splits one campaign's audience, so the copy gets its own."""
    source = Campaign.objects.select_related("experiment").get(pk=campaign.pk)
    copy = Campaign.objects.get(pk=source.pk)
    copy.pk = None
    copy.key = _free_key(lambda key: Campaign.objects.filter(key=key).exists(), source.key)
    copy.name = f"{source.name} (copy)"[:150]
    copy.status = Campaign.Status.DRAFT
    copy.version = 1
    copy.trigger_cursor = 0
    for name in ("scheduled_at", "started_at", "paused_at", "finished_at", "audience_resolved_at", "send_at"):
        setattr(copy, name, None)
    copy.created_by = user if getattr(user, "pk", None) else None
    copy.experiment = _experiment_copy(source.experiment, user=user) if source.experiment is not None else None
    copy.created_at = timezone.now()
    copy.save()
    if copy.experiment is not None:
        # The copied experiment is the copy's own (as the builder's is): nobody else assigns in
        # it, and the builder's launch starts it.
        from campaigns.services.assignments import experiment_claim

        experiment_claim(experiment=copy.experiment, campaign_id=copy.pk)
    for name in M2M_FIELDS:
        getattr(copy, name).set(getattr(source, name).all())
    for treatment in Treatment.objects.filter(campaign=source).prefetch_related("contents"):
        contents = list(treatment.contents.all())
        treatment.pk = None
        treatment.campaign = copy
        treatment.save()
        for content in contents:
            content.pk = None
            content.treatment = treatment
            content.save()
    return copy


def _experiment_copy(experiment: Any, *, user: Any) -> Any:
    from experiments import selectors as experiment_selectors
    from experiments import services as experiment_services

    variants = [
        experiment_services.VariantSpec(
            key=v.key, name=v.name, weight=v.weight, payload=dict(v.payload), is_control=v.is_control
        )
        for v in experiment.variants.all()
    ]
    metrics = [
        experiment_services.MetricSpec(
            event_type_code=m.event_type.code,
            role=m.role,
            window_hours=m.window_hours,
            noninferiority_margin=m.noninferiority_margin,
        )
        for m in experiment.metrics.select_related("event_type")
    ]
    # The analysis plan travels with the copy (issue 14): it is frozen when the copy starts.
    plan = experiment_selectors.experiment_plan(experiment=experiment)
    plan["confirmatory_dimensions"] = list(plan["confirmatory_dimensions"])
    # A planned end date belongs to the source's run: the copy keeps the planned duration from
    # now (editable before launch). Copied as is, a past end refused the copy's launch.
    end = plan["planned_end_at"]
    if end is not None:
        now = timezone.now()
        if experiment.started_at is not None and end > experiment.started_at:
            plan["planned_end_at"] = now + (end - experiment.started_at)
        elif end <= now:
            plan["planned_end_at"] = None
    return experiment_services.experiment_create(
        key=_free_key(lambda key: experiment_selectors.experiment_key_taken(key=key), experiment.key),
        name=f"{experiment.name} (copy)"[:150],
        hypothesis=experiment.hypothesis,
        owner=user if getattr(user, "pk", None) else None,
        coverage=experiment.coverage,
        variants=variants,
        metrics=metrics,
        plan=plan,
    )
