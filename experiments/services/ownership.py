"""Who owns an experiment's audience.

An application on top of the engine (a campaign) that splits its own audience with an
experiment marks it ``managed_by``: from then on only that owner assigns and exposes
customers in it (the campaign decides, then records the exposure), and the generic
assignment API reports the owner's decision instead of making its own (reason
``campaign_managed`` when there is none). Without this, any app calling
``GET /customers/{id}/assignments`` assigned and exposed customers outside the campaign's
audience, and the campaign's report counted them.

The engine knows only the label: it never imports the owner (``segments`` ←
``experiments`` ← ``campaigns``).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from experiments.models import Assignment, Experiment, HoldoutMember, Phase
from experiments.selectors import experiment_configs_invalidate


@transaction.atomic
def experiment_manager_set(*, experiment: Experiment, managed_by: str) -> Experiment:
    """Claim ``experiment`` for ``managed_by`` (e.g. ``"campaign:winback"``); idempotent.
    Refused when another owner holds it: one experiment splits one audience.

    Also refused, on the first claim, when the current phase already holds customers
    (assigned or held out by the generic assignment API or another app while the
    experiment was nobody's): the owner's report would count them as its own, although it
    never decided for them. A new phase (or a new experiment) starts it clean."""
    row = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if row.managed_by and row.managed_by != managed_by:
        raise ValidationError(
            {"experiment": f"Experiment '{row.key}' already belongs to {row.managed_by}; create a new experiment."}
        )
    if not row.managed_by:
        _current_phase_empty_check(row)
    if row.managed_by != managed_by:
        row.managed_by = managed_by
        row.save(update_fields=["managed_by"])
        experiment_configs_invalidate()
    experiment.managed_by = managed_by
    return row


@transaction.atomic
def experiment_manager_release(*, experiment: Experiment, managed_by: str) -> None:
    """Give the experiment back (an owner that no longer uses it, e.g. a draft campaign that
    switched experiments). Only its owner can release it."""
    updated = Experiment.objects.filter(pk=experiment.pk, managed_by=managed_by).update(managed_by="")
    if updated:
        experiment_configs_invalidate()


def _current_phase_empty_check(experiment: Experiment) -> None:
    phase = Phase.objects.filter(experiment=experiment, ended_at__isnull=True).order_by("-number").first()
    if phase is None:
        return
    taken = Assignment.objects.filter(phase=phase).count() + HoldoutMember.objects.filter(phase=phase).count()
    if taken:
        raise ValidationError(
            {
                "experiment": (
                    f"Experiment '{experiment.key}' already has {taken} customer(s) in phase {phase.number}, "
                    "assigned outside this campaign (e.g. by the assignment API): its report would count them as "
                    "the campaign's. Start a new phase of the experiment (Change allocation / new phase) or use "
                    "a new experiment."
                )
            }
        )
