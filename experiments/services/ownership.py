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

from experiments.models import Experiment
from experiments.selectors import experiment_configs_invalidate


@transaction.atomic
def experiment_manager_set(*, experiment: Experiment, managed_by: str) -> Experiment:
    """Claim ``experiment`` for ``managed_by`` (e.g. ``"campaign:winback"``); idempotent.
    Refused when another owner holds it: one experiment splits one audience."""
    row = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if row.managed_by and row.managed_by != managed_by:
        raise ValidationError(
            {"experiment": f"Experiment '{row.key}' already belongs to {row.managed_by}; create a new experiment."}
        )
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
