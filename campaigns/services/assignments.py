"""The experiments engine as campaigns use it: split an audience into variants (sticky,
through ``experiments.services``) and read each customer's variant in bulk.

Everyone in the audience is assigned before any channel filtering (intent to treat).
Customers the engine does not assign have no assignment row: holdout members are read in
bulk (``holdout_members_queryset``); the reason for the rest (outside coverage, not
targeted, namespace, or new since the audience was assigned) is asked of the engine one
customer at a time, which touches only that minority of a batch.

(The engine's modules are imported where used: campaigns without an experiment work
whatever the state of the experiments app.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.db.models import QuerySet

from campaigns.decision import Split
from campaigns.services.bulk import id_in
from segments.selectors import customers_queryset

if TYPE_CHECKING:
    from experiments.models import Experiment
    from segments.models import Customer


NO_EXPERIMENT = Split(variant_key="", is_control=False, reason="assigned", assignment_id=None)


def manager_tag(campaign_id: int) -> str:
    """The ``managed_by`` label a campaign puts on its experiment."""
    return f"campaign:{campaign_id}"


def experiment_claim(*, experiment: Experiment, campaign_id: int) -> None:
    """Mark the experiment as this campaign's: the generic assignment API stops assigning and
    exposing in it. Refused (``ValidationError``) when another campaign or app holds it."""
    from experiments import services as experiment_services

    experiment_services.experiment_manager_set(experiment=experiment, managed_by=manager_tag(campaign_id))


def experiment_release(*, experiment: Experiment, campaign_id: int) -> None:
    from experiments import services as experiment_services

    experiment_services.experiment_manager_release(experiment=experiment, managed_by=manager_tag(campaign_id))


def audience_assign(*, experiment: Experiment, customers: QuerySet[Customer], campaign_id: int) -> None:
    """Split the campaign's audience (as the experiment's manager: nobody else may)."""
    from experiments import services as experiment_services

    experiment_services.audience_assign(experiment=experiment, customers=customers, manager=manager_tag(campaign_id))


def splits_get(*, experiment: Experiment | None, customer_ids: Sequence[int], manager: str = "") -> dict[int, Split]:
    if experiment is None:
        return dict.fromkeys(customer_ids, NO_EXPERIMENT)
    from experiments import selectors as experiment_selectors

    assigned = experiment_selectors.assignments_queryset(experiment=experiment)
    rows = assigned.filter(id_in(assigned.model, "customer", customer_ids)).values_list(
        "customer_id", "variant__key", "variant__is_control", "id"
    )
    splits = {cid: Split(key, bool(control), "assigned", aid) for cid, key, control, aid in rows}
    missing = [cid for cid in customer_ids if cid not in splits]
    if missing:
        held = experiment_selectors.holdout_members_queryset(experiment=experiment).filter(customer_id__in=missing)
        for cid in held.values_list("customer_id", flat=True):
            splits[cid] = Split(variant_key="", is_control=False, reason="holdout", assignment_id=None)
        missing = [cid for cid in missing if cid not in splits]
    if missing:
        for customer in customers_queryset(ids=missing):
            splits[customer.pk] = split_one(experiment=experiment, customer=customer, manager=manager)
    return splits


def split_one(*, experiment: Experiment | None, customer: Customer, expose: bool = False, manager: str = "") -> Split:
    if experiment is None:
        return NO_EXPERIMENT
    from experiments import services as experiment_services

    decision = experiment_services.assignment_get_or_create(
        experiment=experiment, customer=customer, expose=expose, manager=manager
    )
    return Split(
        variant_key=decision.variant_key or "",
        is_control=decision.is_control,
        reason=decision.reason,
        assignment_id=decision.assignment_id,
    )


def exposure_record(*, assignment_id: int, variant_key: str) -> None:
    from experiments import services as experiment_services

    experiment_services.exposure_record(assignment_id=assignment_id, variant_key=variant_key or None)


def exposures_record(*, assignments: Sequence[tuple[int, str]], at: dt.datetime) -> None:
    """Record the campaign's decision as the exposure of assigned customers, treated and
    control alike (intent to treat: the comparison starts when the campaign decided, whether
    or not a message could be delivered).

    One statement for the whole batch when the engine offers a bulk call
    (``experiments.services.exposures_record(assignment_ids=…, at=…)``); otherwise one
    ``exposure_record`` per assignment, which costs a few statements each."""
    from experiments import services as experiment_services

    bulk = getattr(experiment_services, "exposures_record", None)
    if bulk is not None:
        bulk(assignment_ids=[a for a, _ in assignments], at=at)
        return
    for assignment_id, variant_key in assignments:
        experiment_services.exposure_record(assignment_id=assignment_id, variant_key=variant_key or None, at=at)


def exposures_mode() -> str:
    from experiments import services as experiment_services

    return "bulk" if hasattr(experiment_services, "exposures_record") else "per-assignment"


# Every campaign experiment watches what its messages cost: unsubscribes, spam complaints and
# hard bounces, per variant and layer like any metric (``experiments.reports``).
GUARDRAIL_EVENTS: tuple[str, ...] = ("unsubscribe", "complaint", "bounce")


def guardrails_ensure(*, experiment: Experiment) -> int:
    """Add the default guardrail metrics the campaign's experiment lacks."""
    from experiments import services as experiment_services

    return experiment_services.experiment_metrics_ensure(
        experiment=experiment,
        metrics=[experiment_services.MetricSpec(event_type_code=code, role="guardrail") for code in GUARDRAIL_EVENTS],
    )
