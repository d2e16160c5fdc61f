"""Reads of the experiments app (keyword-only; querysets or frozen dataclasses).

- ``experiment_get``, ``experiment_current_phase``, ``assignments_queryset``,
  ``holdout_members_queryset``: the rows other apps and the report read.
- ``experiment_configs``: the hash inputs of every running or paused experiment as frozen
  dataclasses, cached per process and invalidated through the shared cache (see below),
  so the assignment API answers without re-reading experiments, phases, variants and
  targeting on every request.
- ``variant_counts``: live counts of assigned, exposed and conflicting per variant (admin).
- ``layer_rollup``: exposures and conversions per variant, overall and per layer of every
  dimension, from two GROUP BY statements that need no join (conversions carry their
  assignment's variant and snapshot). The lift report has its own aggregation
  (``experiments.reports``); this one is the engine's reference for it.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Q, QuerySet

from experiments.models import (
    Assignment,
    Conversion,
    Experiment,
    HoldoutMember,
    Phase,
    SegmentSnapshot,
    Variant,
)


def experiment_get(*, key: str) -> Experiment | None:
    return Experiment.objects.filter(key=key).first()


def experiment_key_taken(*, key: str) -> bool:
    return Experiment.objects.filter(key=key).exists()


def experiment_plan(*, experiment: Experiment) -> dict[str, Any]:
    """The experiment's analysis-plan fields (``Experiment.PLAN_FIELDS``), as stored."""
    return {name: getattr(experiment, name) for name in Experiment.PLAN_FIELDS}


def variant_keys(*, experiment_id: int, is_control: bool | None = None) -> list[str]:
    """The experiment's variant keys in key order (only control / only the others when given)."""
    variants = Variant.objects.filter(experiment_id=experiment_id)
    if is_control is not None:
        variants = variants.filter(is_control=is_control)
    return list(variants.order_by("key").values_list("key", flat=True))


def experiment_current_phase(*, experiment: Experiment) -> Phase | None:
    """The open phase of a running or paused experiment; for a stopped one, its last phase."""
    return Phase.objects.filter(experiment=experiment).order_by("-number").first()


def assignments_queryset(*, experiment: Experiment, phase: Phase | None = None) -> QuerySet[Assignment]:
    """The experiment's assignments in ``phase`` (default: the current phase; none in draft)."""
    phase = phase or experiment_current_phase(experiment=experiment)
    if phase is None:
        return Assignment.objects.none()
    return Assignment.objects.filter(experiment=experiment, phase=phase)


def holdout_members_queryset(*, experiment: Experiment, phase: Phase | None = None) -> QuerySet[HoldoutMember]:
    """Customers the experiment's holdout kept out of ``phase`` (default: the current phase)."""
    phase = phase or experiment_current_phase(experiment=experiment)
    if phase is None:
        return HoldoutMember.objects.none()
    return HoldoutMember.objects.filter(experiment=experiment, phase=phase)


# --- Hash inputs, cached ------------------------------------------------------------------


@dataclass(frozen=True)
class VariantConfig:
    id: int
    key: str
    is_control: bool
    payload: dict[str, Any]


@dataclass(frozen=True)
class ExperimentConfig:
    """What assigning a customer needs, for one running or paused experiment.

    ``variants`` and ``weights`` are in the phase's (GrowthBook variation) order.
    """

    id: int
    key: str
    status: str
    phase_id: int
    phase_number: int
    seed: str
    coverage: float
    weights: tuple[float, ...]
    variants: tuple[VariantConfig, ...]
    namespace_key: str | None = None
    namespace_start: float = 0.0
    namespace_end: float = 1.0
    holdout_id: int | None = None
    holdout_percent: float = 0.0
    holdout_seed: str = ""
    include_segment_ids: tuple[int, ...] = ()
    exclude_segment_ids: tuple[int, ...] = ()
    include_layer_ids: tuple[int, ...] = ()
    exclude_layer_ids: tuple[int, ...] = ()
    managed_by: str = ""  # set: only its owner (a campaign) assigns and exposes
    variants_by_id: dict[int, VariantConfig] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_running(self) -> bool:
        return self.status == Experiment.Status.RUNNING

    @property
    def has_targeting(self) -> bool:
        return bool(
            self.include_segment_ids or self.exclude_segment_ids or self.include_layer_ids or self.exclude_layer_ids
        )


CONFIG_GENERATION_KEY = "experiments:config-generation"
# A process re-reads the configuration at least this often even without an
# invalidation (a safety net for writes that bypass the ORM, e.g. ``QuerySet.update``
# outside the services, or a cache that lost the generation key).
CONFIG_MAX_AGE_SECONDS = 30.0

_memo: tuple[str, float, dict[int, ExperimentConfig]] | None = None


def _generation() -> str:
    generation = cache.get(CONFIG_GENERATION_KEY)
    if generation is None:
        cache.add(CONFIG_GENERATION_KEY, uuid.uuid4().hex, timeout=None)
        generation = cache.get(CONFIG_GENERATION_KEY) or "uncached"
    return str(generation)


def experiment_configs_generation() -> str:
    """The current configuration generation token (changes with every invalidation)."""
    memo = _memo
    return memo[0] if memo is not None else _generation()


def experiment_configs() -> dict[int, ExperimentConfig]:
    """Running and paused experiments by id (ordered by key), cached per process.

    One cache read per call: the generation token. Any write to an experiment, phase,
    variant, namespace or holdout replaces the token (``experiment_configs_invalidate``,
    called by the services and by model signals, right away and again after commit), and
    every process reloads on its next call.
    """
    global _memo
    generation = _generation()
    memo = _memo
    now = time.monotonic()
    if memo is not None and memo[0] == generation and now - memo[1] < CONFIG_MAX_AGE_SECONDS:
        return memo[2]
    configs = _configs_load()
    _memo = (generation, now, configs)
    return configs


def experiment_configs_invalidate() -> None:
    """Make every process reload the configuration: now, and again once the current
    transaction commits (a process may have re-read the old rows in between)."""

    def bump() -> None:
        global _memo
        _memo = None
        cache.set(CONFIG_GENERATION_KEY, uuid.uuid4().hex, timeout=None)

    bump()
    transaction.on_commit(bump)


def experiment_config_get(*, experiment_id: int) -> ExperimentConfig | None:
    """The cached configuration of a running or paused experiment, else None."""
    return experiment_configs().get(experiment_id)


def _configs_load() -> dict[int, ExperimentConfig]:
    experiments = list(Experiment.objects.active().select_related("namespace", "holdout").order_by("key"))
    if not experiments:
        return {}
    ids = [e.pk for e in experiments]
    phases = {p.experiment_id: p for p in Phase.objects.filter(experiment_id__in=ids, ended_at__isnull=True)}
    variants: dict[int, dict[str, Variant]] = defaultdict(dict)
    for variant in Variant.objects.filter(experiment_id__in=ids):
        variants[variant.experiment_id][variant.key] = variant
    targeting: dict[str, dict[int, list[int]]] = {}
    for name, column in (
        ("include_segments", "segment_id"),
        ("exclude_segments", "segment_id"),
        ("include_layers", "layer_id"),
        ("exclude_layers", "layer_id"),
    ):
        through = getattr(Experiment, name).through
        rows: dict[int, list[int]] = defaultdict(list)
        for experiment_id, target_id in through.objects.filter(experiment_id__in=ids).values_list(
            "experiment_id", column
        ):
            rows[experiment_id].append(target_id)
        targeting[name] = rows

    configs: dict[int, ExperimentConfig] = {}
    for e in experiments:
        phase = phases.get(e.pk)
        if phase is None:  # an active experiment always has an open phase; be safe
            continue
        allocation = phase_allocation(phase=phase)
        by_key = variants[e.pk]
        ordered = tuple(
            VariantConfig(
                id=by_key[key].pk, key=key, is_control=by_key[key].is_control, payload=dict(by_key[key].payload)
            )
            for key, _ in allocation
            if key in by_key
        )
        holdout = e.holdout if e.holdout is not None and e.holdout.is_active else None
        configs[e.pk] = ExperimentConfig(
            id=e.pk,
            key=e.key,
            status=e.status,
            phase_id=phase.pk,
            phase_number=phase.number,
            seed=phase.seed,
            coverage=float(phase.coverage),
            weights=tuple(float(w) for key, w in allocation if key in by_key),
            variants=ordered,
            namespace_key=e.namespace.key if e.namespace is not None else None,
            namespace_start=float(e.namespace_start),
            namespace_end=float(e.namespace_end),
            holdout_id=holdout.pk if holdout else None,
            holdout_percent=float(holdout.percent) if holdout else 0.0,
            holdout_seed=holdout.seed if holdout else "",
            include_segment_ids=tuple(sorted(targeting["include_segments"][e.pk])),
            exclude_segment_ids=tuple(sorted(targeting["exclude_segments"][e.pk])),
            include_layer_ids=tuple(sorted(targeting["include_layers"][e.pk])),
            exclude_layer_ids=tuple(sorted(targeting["exclude_layers"][e.pk])),
            managed_by=e.managed_by,
            variants_by_id={v.id: v for v in ordered},
        )
    return configs


def phase_allocation(*, phase: Phase) -> list[tuple[str, Decimal]]:
    """The phase's ordered ``[(variant key, weight)]``."""
    return [(item["variant"], Decimal(str(item["weight"]))) for item in phase.weights]


# --- Counts for the admin and the report ----------------------------------------------------


@dataclass(frozen=True)
class VariantCounts:
    variant_key: str
    is_control: bool
    assigned: int
    exposed: int
    conflicting: int


def variant_counts(*, experiment: Experiment, phase: Phase | None = None) -> list[VariantCounts]:
    """Assigned, exposed and conflicting-exposure counts per variant in the phase."""
    phase = phase or experiment_current_phase(experiment=experiment)
    rows: dict[int, dict[str, int]] = {}
    if phase is not None:
        for row in (
            Assignment.objects.filter(phase=phase)
            .values("variant_id")
            .annotate(
                assigned=Count("id"),
                exposed=Count("id", filter=Q(first_exposed_at__isnull=False)),
                conflicting=Count("id", filter=Q(conflicting_exposure=True)),
            )
        ):
            rows[row["variant_id"]] = row
    return [
        VariantCounts(
            variant_key=v.key,
            is_control=v.is_control,
            assigned=rows.get(v.pk, {}).get("assigned", 0),
            exposed=rows.get(v.pk, {}).get("exposed", 0),
            conflicting=rows.get(v.pk, {}).get("conflicting", 0),
        )
        for v in experiment.variants.all()
    ]


@dataclass(frozen=True)
class LayerRollupRow:
    """Analysed customers of one variant in one layer (``dimension_key``/``layer_key``
    both ``None``: all of the variant's analysed customers).

    ``exposed``: assigned, exposed, no conflicting exposure (the analysis population);
    ``conversions``: metric id -> how many of them converted.
    """

    variant_key: str
    dimension_key: str | None
    layer_key: str | None
    exposed: int
    conversions: dict[int, int]


def layer_rollup(
    *, experiment: Experiment, phase: Phase | None = None, metric_ids: Iterable[int] | None = None
) -> list[LayerRollupRow]:
    """Exposures and conversions per variant, overall and per layer of every dimension.

    Two statements, whatever the number of dimensions: exposures grouped by
    ``(variant_id, snapshot_id)`` over the phase's assignments, and conversions grouped by
    ``(metric_id, variant_id, snapshot_id)`` over the phase's conversions; the few distinct
    snapshots are then rolled up to their layers in memory. Layers come from the
    pre-treatment snapshot, never from the customer's current layer.
    """
    phase = phase or experiment_current_phase(experiment=experiment)
    if phase is None:
        return []
    variant_keys = dict(Variant.objects.filter(experiment=experiment).values_list("id", "key"))
    exposed_rows = list(
        Assignment.objects.filter(phase=phase, first_exposed_at__isnull=False, conflicting_exposure=False)
        .values_list("variant_id", "snapshot_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    conversions_qs = Conversion.objects.filter(phase=phase)
    if metric_ids is not None:
        conversions_qs = conversions_qs.filter(metric_id__in=list(metric_ids))
    converted_rows = list(
        conversions_qs.values_list("metric_id", "variant_id", "snapshot_id").annotate(n=Count("id")).order_by()
    )
    snapshot_ids = {s for _, s, _ in exposed_rows} | {s for _, _, s, _ in converted_rows}
    layers: Mapping[int, dict[str, str]] = dict(
        SegmentSnapshot.objects.filter(pk__in=snapshot_ids).values_list("id", "layers")
    )

    Key = tuple[str, str | None, str | None]
    totals: dict[Key, int] = defaultdict(int)
    conversions: dict[Key, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def keys(variant_id: int, snapshot_id: int) -> list[Key]:
        variant = variant_keys[variant_id]
        return [(variant, None, None)] + [(variant, d, lk) for d, lk in layers.get(snapshot_id, {}).items()]

    for variant_id, snapshot_id, n in exposed_rows:
        for key in keys(variant_id, snapshot_id):
            totals[key] += n
    for metric_id, variant_id, snapshot_id, n in converted_rows:
        for key in keys(variant_id, snapshot_id):
            conversions[key][metric_id] += n
    return [
        LayerRollupRow(
            variant_key=key[0],
            dimension_key=key[1],
            layer_key=key[2],
            exposed=totals.get(key, 0),
            conversions=dict(conversions.get(key, {})),
        )
        for key in sorted(set(totals) | set(conversions), key=lambda k: (k[0], k[1] or "", k[2] or ""))
    ]


def customer_assignments_queryset(*, customer_id: int) -> QuerySet[Assignment]:
    """One customer's assignments in every experiment and phase, with their exposure record
    (the customer timeline; the customer index serves it)."""
    return Assignment.objects.filter(customer_id=customer_id).select_related("experiment", "variant", "phase")
