"""Writes of the experiments app, one module per area:

- ``lifecycle``: create, start, pause, resume, stop, allocation changes, new phases, holdouts.
- ``assigning``: sticky assignment of one customer or a whole audience.
- ``exposures``: exposures (first kept, later counted, conflicts flagged).
- ``conversions``: conversions from the event stream, set-based and incremental.
- ``snapshots``: the dictionary of layer snapshots.

Other apps import from here (``from experiments import services``).
"""

from experiments.services.assigning import (
    AssignmentDecision,
    AudienceAssignmentResult,
    Reason,
    assignment_get_or_create,
    audience_assign,
    customer_decisions,
)
from experiments.services.conversions import conversions_refresh
from experiments.services.exposures import exposure_log, exposure_record, exposures_record
from experiments.services.lifecycle import (
    MetricSpec,
    Targeting,
    VariantSpec,
    experiment_allocation_update,
    experiment_create,
    experiment_metrics_ensure,
    experiment_new_phase,
    experiment_pause,
    experiment_plan_update,
    experiment_resume,
    experiment_start,
    experiment_stop,
    holdout_create,
    holdout_seed_for,
    namespace_overlap_check,
    variants_validate,
)
from experiments.services.ownership import experiment_manager_release, experiment_manager_set

__all__ = [
    "AssignmentDecision",
    "AudienceAssignmentResult",
    "MetricSpec",
    "Reason",
    "Targeting",
    "VariantSpec",
    "assignment_get_or_create",
    "audience_assign",
    "conversions_refresh",
    "customer_decisions",
    "experiment_allocation_update",
    "experiment_create",
    "experiment_manager_release",
    "experiment_manager_set",
    "experiment_metrics_ensure",
    "experiment_new_phase",
    "experiment_pause",
    "experiment_plan_update",
    "experiment_resume",
    "experiment_start",
    "experiment_stop",
    "exposure_log",
    "exposure_record",
    "exposures_record",
    "holdout_create",
    "holdout_seed_for",
    "namespace_overlap_check",
    "variants_validate",
]
