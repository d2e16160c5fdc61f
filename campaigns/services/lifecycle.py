"""A campaign's status, moved only by these services (each checks the transition it allows)::

    draft ──schedule──► scheduled ──(send_at reached, or launch)──► running ⇄ paused
      └────────────────────launch──────────────────────────────────┘    │
                                                              finish ───►  finished
    (any of draft, scheduled, running, paused) ──finish──► finished

Launching a broadcast records ``running`` and, after commit, asks a task to resolve the
audience: assign everyone through the experiment (intent to treat), then split the audience
into ``AudienceBatch`` rows of ~1,000 customer ids, each decided by its own task. Everything
is recorded in the database first, so a broker that is down at launch loses nothing: the
periodic tick publishes whatever is due.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from campaigns import conf, kinds
from campaigns.models import AudienceBatch, Campaign, Content, Delivery, Treatment
from campaigns.services import assignments
from campaigns.services.decide import (
    DecideResult,
    Target,
    TreatmentIndex,
    campaign_audience,
    campaign_split_audience,
    recipients_decide,
    treated_variant_keys,
)
from campaigns.services.outbox import (
    PUBLISH_RETRY,
    TASK_AUDIENCE_RESOLVE,
    audience_batches_enqueue,
    deliveries_enqueue,
    task_publish,
)
from campaigns.services.render import content_check
from experiments import services as experiment_services
from segments import selectors as segment_selectors
from segments.contacts import Channel
from segments.selectors import events_queryset

logger = logging.getLogger(__name__)

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "schedule": (Campaign.Status.DRAFT,),
    "launch": (Campaign.Status.DRAFT, Campaign.Status.SCHEDULED),
    "pause": (Campaign.Status.RUNNING,),
    "resume": (Campaign.Status.PAUSED,),
    "finish": (Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.RUNNING, Campaign.Status.PAUSED),
}


class TransitionError(ValidationError):
    pass


def _locked(campaign: Campaign, action: str) -> Campaign:
    row = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if row.status not in TRANSITIONS[action]:
        allowed = ", ".join(TRANSITIONS[action])
        raise TransitionError({"status": f"Cannot {action} a {row.status} campaign (only from: {allowed})."})
    return row


def campaign_validate(*, campaign: Campaign, at_launch: bool = False) -> None:
    """Everything a campaign needs before it may send; raises ``ValidationError`` by field.
    ``at_launch``: also refuse a broadcast whose audience is empty now (a scheduled one may
    still fill before its time)."""
    errors: dict[str, list[str]] = {}

    def err(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    unknown = [c for c in campaign.channels if c not in Channel.values]
    if not campaign.channels:
        err("channels", "List at least one channel.")
    if unknown:
        err("channels", f"Unknown channel(s): {', '.join(map(str, unknown))}. Known: {', '.join(Channel.values)}.")
    treatments = list(Treatment.objects.filter(campaign=campaign).select_related("offer", "layer", "campaign"))
    if not treatments:
        err("treatments", "Add at least one treatment (offer and content per channel).")
    contents = list(Content.objects.filter(treatment__campaign=campaign).select_related("treatment__campaign"))
    for content in contents:
        try:
            content_check(content=content)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                for message in messages:
                    err(f"content.{content.treatment_id}.{content.channel}.{name}", message)
    used = {c.channel for c in contents}
    for channel in campaign.channels:
        if channel in Channel.values and channel not in used:
            err("channels", f"No treatment has {channel} content.")
    by_treatment: dict[int, set[str]] = {}
    for content in contents:
        by_treatment.setdefault(content.treatment_id, set()).add(content.channel)
    for treatment in treatments:
        missing = [c for c in campaign.channels if c in used and c not in by_treatment.get(treatment.pk, set())]
        if missing:
            # The decision would skip the channel for this treatment's customers: someone reachable
            # only there is silently not contacted (or the message suppressed "no_content").
            err(
                "treatments",
                f"Treatment '{_treatment_label(treatment)}' has no {', '.join(missing)} content: write it on the "
                "treatment's page, or remove the channel from the campaign.",
            )
    for message in _audience_problems(campaign, at_launch=at_launch):
        err("audience", message)
    experiment = campaign.experiment
    if experiment is not None:
        owner = _experiment_owner(campaign)
        # A draft experiment nobody else holds is the campaign's own (created with it, or copied
        # by "Duplicate as draft"): launching or scheduling the campaign starts it
        # (``_experiment_start_own``). Any other status is the growth team's to resolve.
        if experiment.status != "running" and not (experiment.status == "draft" and not owner):
            err("experiment", f"Experiment '{experiment.key}' is {experiment.status}; start it first.")
        if owner:
            err("experiment", f"Experiment '{experiment.key}' already splits {owner}'s audience; use a new experiment.")
        variant_keys = set(experiment.variants.values_list("key", flat=True))
        for treatment in treatments:
            if treatment.variant_key and treatment.variant_key not in variant_keys:
                err("treatments", f"Variant '{treatment.variant_key}' is not a variant of '{experiment.key}'.")
    if experiment is not None:
        for message in _coverage_gaps(campaign):
            err("treatments", message)
    for treatment in treatments:
        if treatment.layer_id and campaign.split_dimension_id != treatment.layer.dimension_id:
            err("treatments", f"Layer '{treatment.layer}' is not a layer of the campaign's split dimension.")
    if campaign.trigger == Campaign.Trigger.EVENT and campaign.trigger_event_type_id is None:
        err("trigger_event_type", "An event trigger needs an event type.")
    if campaign.trigger == Campaign.Trigger.LAYER_ENTRY and campaign.trigger_layer_id is None:
        err("trigger_layer", "A layer-entry trigger needs a layer.")
    for field, message in kinds.kind_module(campaign.kind).config_issues(campaign):
        err(field, message)
    if campaign.ends_at and campaign.send_at and campaign.ends_at <= campaign.send_at:
        err("ends_at", "Must be after send_at.")
    if errors:
        raise ValidationError(errors)


def _treatment_label(treatment: Treatment) -> str:
    role = f" ({treatment.referral_role})" if treatment.referral_role else ""
    return f"{treatment.variant_key or 'any variant'} × {treatment.layer or 'any layer'}{role}"


def _audience_problems(campaign: Campaign, *, at_launch: bool) -> list[str]:
    """A segment never computed has no members yet (the audience reads stored members), and
    a broadcast to nobody is a mistake. (A triggered campaign's audience fills as triggers
    come, so only its segments are checked.)"""
    problems = [
        f"Segment '{segment.key}' has never been computed, so it has no members yet: compute it "
        f"(admin: Segments › {segment.name} › 'Recompute now', or the campaign page's 'Compute audience now')."
        for segment in (*campaign.include_segments.all(), *campaign.exclude_segments.all())
        if segment.computed_at is None
    ]
    if at_launch and not problems and not campaign.is_triggered and not campaign_audience(campaign=campaign).exists():
        problems.append(
            "The audience is empty: no customer is in the included segments and layers (recompute them, or "
            "widen the audience)."
        )
    return problems


def segments_never_computed(*, campaign: Campaign) -> list[int]:
    """Ids of the campaign's segments that have never been computed."""
    ids = [
        *campaign.include_segments.filter(computed_at__isnull=True).values_list("pk", flat=True),
        *campaign.exclude_segments.filter(computed_at__isnull=True).values_list("pk", flat=True),
    ]
    return sorted(set(ids))


def campaign_audience_compute(*, campaign: Campaign) -> dict[str, str]:
    """Compute the campaign's never-computed segments now (the launch check's one click).
    Returns {segment key: outcome status}."""
    from segments.services.recompute import segment_recompute

    outcomes = {}
    for segment_id in segments_never_computed(campaign=campaign):
        outcome = segment_recompute(segment_id=segment_id)
        outcomes[outcome.target] = outcome.status
    return outcomes


def _experiment_owner(campaign: Campaign) -> str:
    """Who else holds the campaign's experiment ("" when free or this campaign's own)."""
    managed_by = campaign.experiment.managed_by if campaign.experiment is not None else ""
    if not managed_by or managed_by == assignments.manager_tag(campaign.pk):
        return ""
    prefix, _, ident = managed_by.partition(":")
    if prefix == "campaign" and ident.isdigit():
        other = Campaign.objects.filter(pk=int(ident)).only("key").first()
        if other is not None:
            return f"campaign '{other.key}'"
    return managed_by


def _coverage_gaps(campaign: Campaign) -> list[str]:
    """Layers of the split dimension (within the audience's layer filters) where a treated
    variant has no treatment. Launching is refused there: the decision would exclude those
    customers from every variant (symmetric exposure), which is almost never what the
    author meant. An "any layer" treatment of the variant (or of "any variant") is the
    explicit fallback that covers them."""
    index = TreatmentIndex(campaign)
    keys = treated_variant_keys(campaign)
    roles = kinds.kind_module(campaign.kind).roles(campaign)
    scope: list[tuple[int | None, str]] = [(None, "")]
    if campaign.split_dimension_id is not None:
        layers = segment_selectors.layers_queryset(dimension_id=campaign.split_dimension_id)
        included = set(
            campaign.include_layers.filter(dimension_id=campaign.split_dimension_id).values_list("pk", flat=True)
        )
        excluded = set(campaign.exclude_layers.values_list("pk", flat=True))
        scope = [
            (layer.pk, layer.name)
            for layer in layers
            if (not included or layer.pk in included) and layer.pk not in excluded
        ]
    gaps = []
    for key in keys:
        for role in roles:
            missing = [
                name
                for layer_id, name in scope
                if index.resolve(variant_key=key, is_control=False, layer_id=layer_id, role=role) is None
            ]
            if not missing:
                continue
            who = f"Variant '{key}'" + (f" ({role})" if role else "")
            where = f"layer(s) {', '.join(missing)}" if campaign.split_dimension_id is not None else "its audience"
            gaps.append(
                f"{who} has no treatment for {where}: add a treatment for each, or an 'any layer' treatment "
                "as the fallback, or exclude those layers from the audience. (Otherwise nobody there would be "
                "in the experiment, control included.)"
            )
    return gaps


def _experiment_start_own(campaign: Campaign) -> None:
    """Start the campaign's own draft experiment with the campaign (its plan is frozen now):
    a growth user launches one thing, not two. Called after the claim, in the same transaction."""
    experiment = campaign.experiment
    if experiment is not None and experiment.status == "draft":
        try:
            campaign.experiment = experiment_services.experiment_start(experiment=experiment)
        except ValidationError as exc:
            # Name whose plan it is: the growth user is on the campaign's page.
            problems = "; ".join(f"{field}: {' '.join(m)}" for field, m in exc.message_dict.items())
            raise ValidationError(
                {"experiment": f"Experiment '{experiment.key}' cannot start: {problems} Edit its analysis plan."}
            ) from exc


@transaction.atomic
def campaign_schedule(*, campaign: Campaign, send_at: dt.datetime | None = None) -> Campaign:
    row = _locked(campaign, "schedule")
    if send_at is not None:
        row.send_at = send_at
    if row.send_at is None:
        raise ValidationError({"send_at": "Set when the campaign starts sending."})
    campaign_validate(campaign=row)
    if row.experiment is not None:
        assignments.experiment_claim(experiment=row.experiment, campaign_id=row.pk)
        assignments.guardrails_ensure(experiment=row.experiment)
        _experiment_start_own(row)
    row.status, row.scheduled_at = Campaign.Status.SCHEDULED, timezone.now()
    row.save(update_fields=["status", "scheduled_at", "send_at", "updated_at"])
    return row


@transaction.atomic
def campaign_launch(*, campaign: Campaign, now: dt.datetime | None = None) -> Campaign:
    """Start sending now (a broadcast) or start listening to its trigger."""
    now = now or timezone.now()
    row = _locked(campaign, "launch")
    campaign_validate(campaign=row, at_launch=True)
    if row.experiment is not None:
        assignments.experiment_claim(experiment=row.experiment, campaign_id=row.pk)
        assignments.guardrails_ensure(experiment=row.experiment)
        _experiment_start_own(row)
    row.status, row.started_at = Campaign.Status.RUNNING, now
    if row.send_at is None or row.send_at > now:
        row.send_at = now
    if row.is_triggered:
        row.trigger_cursor = _initial_cursor(row, now)
    row.save(update_fields=["status", "started_at", "send_at", "trigger_cursor", "updated_at"])
    if not row.is_triggered:
        transaction.on_commit(lambda: _publish_resolve(row.pk))
    return row


def _initial_cursor(campaign: Campaign, now: dt.datetime) -> int:
    """Triggers fire for what happens from now on, and for the last ``trigger_within_hours``."""
    if campaign.trigger == Campaign.Trigger.EVENT:
        events = events_queryset(event_type_codes=[campaign.trigger_event_type.code])
        if campaign.trigger_within_hours:
            since = now - dt.timedelta(hours=campaign.trigger_within_hours)
            events = events.filter(received_at__lt=since)
        return events.aggregate(m=Max("pk"))["m"] or 0
    from campaigns.selectors import layer_entries_queryset

    return layer_entries_queryset(layer_id=campaign.trigger_layer_id).aggregate(m=Max("pk"))["m"] or 0


def _publish_resolve(campaign_id: int) -> None:
    try:
        task_publish(TASK_AUDIENCE_RESOLVE, args=[campaign_id], retry=True, retry_policy=PUBLISH_RETRY)
    except Exception as exc:  # noqa: BLE001 - the tick resolves running campaigns left unresolved
        logger.warning("broker unavailable at launch of campaign %s; the tick will resume it: %r", campaign_id, exc)


@transaction.atomic
def campaign_pause(*, campaign: Campaign) -> Campaign:
    row = _locked(campaign, "pause")
    row.status, row.paused_at = Campaign.Status.PAUSED, timezone.now()
    row.save(update_fields=["status", "paused_at", "updated_at"])
    return row


@transaction.atomic
def campaign_resume(*, campaign: Campaign) -> Campaign:
    row = _locked(campaign, "resume")
    row.status = Campaign.Status.RUNNING
    row.save(update_fields=["status", "updated_at"])
    pending = list(Delivery.objects.filter(campaign=row, status=Delivery.Status.PENDING).values_list("pk", flat=True))
    transaction.on_commit(lambda: deliveries_enqueue(delivery_ids=pending))
    return row


@transaction.atomic
def campaign_finish(*, campaign: Campaign) -> Campaign:
    """Finish: nothing more is decided or sent; messages not sent yet are suppressed
    (``campaign_ended``). Coupons already issued stay valid until they expire."""
    row = _locked(campaign, "finish")
    row.status, row.finished_at = Campaign.Status.FINISHED, timezone.now()
    row.save(update_fields=["status", "finished_at", "updated_at"])
    Delivery.objects.filter(campaign=row, status__in=[Delivery.Status.PENDING, Delivery.Status.HELD]).update(
        status=Delivery.Status.SUPPRESSED, reason=Delivery.Reason.CAMPAIGN_ENDED, not_before=None
    )
    return row


def campaigns_start_due(*, now: dt.datetime | None = None) -> list[int]:
    now = now or timezone.now()
    started = []
    for campaign in Campaign.objects.filter(status=Campaign.Status.SCHEDULED, send_at__lte=now):
        try:
            campaign_launch(campaign=campaign, now=now)
        except ValidationError as exc:
            logger.error("scheduled campaign %s cannot start: %s", campaign.key, exc)
            continue
        started.append(campaign.pk)
    return started


def campaigns_finish_due(*, now: dt.datetime | None = None) -> list[int]:
    now = now or timezone.now()
    finished = []
    for campaign in Campaign.objects.filter(
        status__in=[Campaign.Status.RUNNING, Campaign.Status.PAUSED], ends_at__lte=now
    ):
        campaign_finish(campaign=campaign)
        finished.append(campaign.pk)
    return finished


def campaigns_unresolved(*, now: dt.datetime | None = None) -> list[int]:
    """Running broadcasts whose audience is still unresolved some time after launch (the
    broker was down, or the resolve task was lost)."""
    now = now or timezone.now()
    grace = dt.timedelta(seconds=conf.get().requeue_after_seconds)
    return list(
        Campaign.objects.filter(
            status=Campaign.Status.RUNNING,
            trigger=Campaign.Trigger.BROADCAST,
            audience_resolved_at__isnull=True,
            started_at__lte=now - grace,
        ).values_list("pk", flat=True)
    )


def campaign_audience_resolve(*, campaign_id: int) -> int:
    """Assign the whole audience through the experiment, then record the batches to decide.
    Idempotent: a campaign resolved before is left alone. Returns the number of batches."""
    campaign = Campaign.objects.filter(pk=campaign_id).select_related("experiment").first()
    if campaign is None or campaign.status != Campaign.Status.RUNNING or campaign.audience_resolved_at:
        return 0
    audience = campaign_audience(campaign=campaign)
    if campaign.experiment is not None:
        # Only where every variant acts (symmetric exposure); the rest is decided "no_treatment".
        assignments.audience_assign(
            experiment=campaign.experiment,
            customers=campaign_split_audience(campaign=campaign),
            campaign_id=campaign.pk,
        )
    size = conf.get().task_batch
    ids = list(audience.order_by("pk").values_list("pk", flat=True))
    bounds = [(chunk[0], chunk[-1]) for chunk in (ids[i : i + size] for i in range(0, len(ids), size))]
    with transaction.atomic():
        row = Campaign.objects.select_for_update().get(pk=campaign_id)
        if row.audience_resolved_at:
            return 0
        batches = AudienceBatch.objects.bulk_create(
            [AudienceBatch(campaign=row, first_customer_id=a, last_customer_id=b) for a, b in bounds],
            batch_size=1000,
        )
        row.audience_resolved_at = timezone.now()
        row.save(update_fields=["audience_resolved_at", "updated_at"])
        batch_ids = [b.pk for b in batches]
        transaction.on_commit(lambda: audience_batches_enqueue(batch_ids=batch_ids))
    logger.info("campaign %s: %d customers in %d batches", campaign.key, len(ids), len(bounds))
    return len(bounds)


def audience_batch_decide(*, batch_id: int) -> DecideResult:
    """Decide one audience batch. The batch row is locked for the transaction, so a
    duplicate task waits and then finds the batch done."""
    with transaction.atomic():
        batch = (
            AudienceBatch.objects.select_for_update(of=("self",))
            .select_related("campaign__experiment")
            .filter(pk=batch_id)
            .first()
        )
        if batch is None or batch.done_at is not None:
            return DecideResult()
        campaign = batch.campaign
        if campaign.status != Campaign.Status.RUNNING:
            return DecideResult()
        base = campaign_audience(campaign=campaign).filter(
            pk__gte=batch.first_customer_id, pk__lte=batch.last_customer_id
        )
        ids: Sequence[int] = list(base.order_by("pk").values_list("pk", flat=True))
        result = recipients_decide(campaign=campaign, targets=[Target(cid, "broadcast") for cid in ids])
        batch.done_at, batch.decided = timezone.now(), result.recipients
        batch.save(update_fields=["done_at", "decided"])
    return result
