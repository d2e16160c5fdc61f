"""Experiment configuration and lifecycle: create, start, pause, resume, stop, change the
allocation, start a new phase; holdouts.

Status: ``draft → running ⇄ paused → stopped`` (``stop`` also from running). Starting opens
phase 1, whose hash seed is the experiment key; a new phase closes the current one and
opens the next with a new seed (``<key>:phase-<n>``), so every customer is assigned afresh
and the report analyses the new phase only.

Stickiness rules while running or paused (assignments exist):

- raising coverage and changing weights apply to the current phase: customers already
  assigned keep their variant, new customers follow the new ranges;
- lowering coverage, adding, removing or renaming a variant key, changing the control,
  and any change to targeting, namespace or holdout are refused unless a new phase is
  started with them.

The analysis plan (primary, secondary and guardrail metrics with their non-inferiority
margins, confirmatory dimensions, inference mode, planned horizon, MDE, alpha, correction)
is frozen into an ``AnalysisPlan`` row whenever a phase opens. Changing it while running
or paused is refused unless a new phase starts with it (``experiment_plan_update``):
a plan chosen after seeing the data is not a plan.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from experiments.models import AnalysisPlan, Experiment, Holdout, Metric, Namespace, Phase, Variant
from experiments.selectors import experiment_configs_invalidate
from segments import selectors as segment_selectors

ONE = Decimal(1)
RESERVED_KEY_PREFIX = "__"  # hash seeds of namespaces and holdouts start with it


@dataclass(frozen=True)
class VariantSpec:
    key: str
    name: str
    weight: Decimal  # fraction: Decimal("0.5") = 50%
    payload: dict[str, Any] = field(default_factory=dict)
    is_control: bool = False


@dataclass(frozen=True)
class MetricSpec:
    event_type_code: str
    role: str = Metric.Role.PRIMARY
    window_hours: int = 7 * 24
    noninferiority_margin: Decimal = Decimal(0)  # guardrails: tolerated worsening, absolute points
    # Value metrics (issue 15): kind, refunds netted out, ratio parts, capping, CUPED lookback.
    kind: str = Metric.Kind.CONVERSION
    refund_event_type_code: str = ""
    numerator_part: str = Metric.Part.SUM
    denominator_event_type_code: str = ""
    denominator_part: str = Metric.Part.COUNT
    cap_percentile: Decimal | None = None
    cuped_lookback_days: int = 14


@dataclass(frozen=True)
class Targeting:
    include_segment_ids: tuple[int, ...] = ()
    exclude_segment_ids: tuple[int, ...] = ()
    include_layer_ids: tuple[int, ...] = ()
    exclude_layer_ids: tuple[int, ...] = ()
    namespace_id: int | None = None
    namespace_start: Decimal = Decimal(0)
    namespace_end: Decimal = ONE
    holdout_id: int | None = None

    @classmethod
    def of(cls, experiment: Experiment) -> Targeting:
        def ids(manager: Any) -> tuple[int, ...]:
            return tuple(sorted(manager.values_list("pk", flat=True)))

        return cls(
            include_segment_ids=ids(experiment.include_segments),
            exclude_segment_ids=ids(experiment.exclude_segments),
            include_layer_ids=ids(experiment.include_layers),
            exclude_layer_ids=ids(experiment.exclude_layers),
            namespace_id=experiment.namespace_id,
            namespace_start=Decimal(experiment.namespace_start),
            namespace_end=Decimal(experiment.namespace_end),
            holdout_id=experiment.holdout_id,
        )

    def normalized(self) -> Targeting:
        return Targeting(
            include_segment_ids=tuple(sorted(set(self.include_segment_ids))),
            exclude_segment_ids=tuple(sorted(set(self.exclude_segment_ids))),
            include_layer_ids=tuple(sorted(set(self.include_layer_ids))),
            exclude_layer_ids=tuple(sorted(set(self.exclude_layer_ids))),
            namespace_id=self.namespace_id,
            namespace_start=Decimal(self.namespace_start) if self.namespace_id else Decimal(0),
            namespace_end=Decimal(self.namespace_end) if self.namespace_id else ONE,
            holdout_id=self.holdout_id,
        )


# --- Validation ------------------------------------------------------------------------------


def variants_validate(*, variants: Sequence[VariantSpec]) -> None:
    """At least two variants, unique keys, exactly one control, weights in [0, 1] summing
    to 100%. Errors name the field (``variants``, ``variants.<i>.weight``, …)."""
    errors: dict[str, list[str]] = {}
    if len(variants) < 2:
        errors["variants"] = [f"An experiment needs at least two variants (it has {len(variants)})."]
    keys = [v.key for v in variants]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        errors.setdefault("variants", []).append(f"Variant keys must be unique: {', '.join(duplicates)}.")
    for i, v in enumerate(variants):
        if not v.key:
            errors[f"variants.{i}.key"] = ["A variant needs a key."]
        if not Decimal(0) <= Decimal(v.weight) <= ONE:
            errors[f"variants.{i}.weight"] = [f"Weight {v.weight} is outside 0–1 (0.5 = 50%)."]
    controls = sum(1 for v in variants if v.is_control)
    if controls != 1:
        errors.setdefault("variants", []).append(f"Exactly one variant must be the control (found {controls}).")
    total = sum((Decimal(v.weight) for v in variants), Decimal(0))
    if variants and total != ONE:
        errors.setdefault("variants", []).append(
            f"Variant weights must sum to 100% (they sum to {(total * 100).normalize():f}%)."
        )
    if errors:
        raise ValidationError(errors)


def _key_validate(key: str) -> None:
    if key.startswith(RESERVED_KEY_PREFIX):
        raise ValidationError({"key": f"Experiment keys may not start with '{RESERVED_KEY_PREFIX}' (reserved seeds)."})


def _coverage_validate(coverage: Decimal) -> Decimal:
    coverage = Decimal(coverage)
    if not Decimal(0) <= coverage <= ONE:
        raise ValidationError(
            {"coverage": f"Coverage {coverage} is outside 0–1 (0.2 = 20% of the targeted customers)."}
        )
    return coverage


def namespace_overlap_check(*, experiment: Experiment, namespace_id: int | None, start: Decimal, end: Decimal) -> None:
    """Refuse a namespace range that overlaps a running or paused experiment's range in
    the same namespace. Locks the namespace row so two concurrent starts serialize."""
    if namespace_id is None:
        return
    if not Decimal(0) <= start < end <= ONE:
        raise ValidationError({"namespace_start": f"The namespace range [{start}, {end}) must lie within [0, 1)."})
    Namespace.objects.select_for_update().filter(pk=namespace_id).first()
    clash = (
        Experiment.objects.active()
        .filter(namespace_id=namespace_id, namespace_start__lt=end, namespace_end__gt=start)
        .exclude(pk=experiment.pk)
        .order_by("key")
        .first()
    )
    if clash is not None:
        raise ValidationError(
            {
                "namespace_start": (
                    f"Range [{start}, {end}) overlaps experiment '{clash.key}' "
                    f"[{clash.namespace_start}, {clash.namespace_end}) in this namespace."
                )
            }
        )


def _variants_of(experiment: Experiment) -> list[VariantSpec]:
    return [
        VariantSpec(key=v.key, name=v.name, weight=Decimal(v.weight), payload=dict(v.payload), is_control=v.is_control)
        for v in experiment.variants.filter(is_active=True).order_by("position", "pk")
    ]


# --- Create --------------------------------------------------------------------------------


@transaction.atomic
def experiment_create(
    *,
    key: str,
    name: str,
    variants: Sequence[VariantSpec],
    hypothesis: str = "",
    owner: AbstractBaseUser | None = None,
    coverage: Decimal = ONE,
    targeting: Targeting | None = None,
    metrics: Sequence[MetricSpec] = (),
    minimum_detectable_effect: Decimal | None = None,
    plan: dict[str, Any] | None = None,
) -> Experiment:
    """A draft experiment with its variants (in order), targeting and metrics."""
    _key_validate(key)
    variants_validate(variants=variants)
    coverage = _coverage_validate(coverage)
    targeting = (targeting or Targeting()).normalized()
    experiment = Experiment(key=key, name=name, hypothesis=hypothesis, owner=owner, coverage=coverage)
    if minimum_detectable_effect is not None:
        experiment.minimum_detectable_effect = minimum_detectable_effect
    unknown = sorted(set(plan or {}) - set(Experiment.PLAN_FIELDS))
    if unknown:
        raise ValidationError({name: "Not a field of the analysis plan." for name in unknown})
    for name, value in (plan or {}).items():
        setattr(experiment, name, value)
    _targeting_apply(experiment, targeting, save=False)
    experiment.full_clean(exclude=["owner"])
    experiment.save()
    _targeting_apply(experiment, targeting, save=True)
    _variants_write(experiment, variants)
    for spec in metrics:
        _metric_from_spec(experiment, spec).save()
    experiment_configs_invalidate()
    return experiment


def _metric_from_spec(experiment: Experiment, spec: MetricSpec) -> Metric:
    """A validated, unsaved metric; unknown event types and inconsistent value-metric
    settings are a ``ValidationError`` naming the field."""

    def event_type(code: str, field_name: str):  # type: ignore[no-untyped-def]
        found = segment_selectors.event_type_get(code=code)
        if found is None:
            raise ValidationError({field_name: f"Unknown event type '{code}'."})
        return found

    metric = Metric(
        experiment=experiment,
        event_type=event_type(spec.event_type_code, "metrics"),
        role=spec.role,
        window_hours=spec.window_hours,
        noninferiority_margin=spec.noninferiority_margin,
        kind=spec.kind,
        numerator_part=spec.numerator_part,
        denominator_part=spec.denominator_part,
        cap_percentile=spec.cap_percentile,
        cuped_lookback_days=spec.cuped_lookback_days,
    )
    if spec.refund_event_type_code:
        metric.refund_event_type = event_type(spec.refund_event_type_code, "refund_event_type")
    if spec.denominator_event_type_code:
        metric.denominator_event_type = event_type(spec.denominator_event_type_code, "denominator_event_type")
    if (spec.kind == Metric.Kind.RATIO) != bool(spec.denominator_event_type_code):
        raise ValidationError(
            {"denominator_event_type": "A ratio metric needs a denominator event type; other kinds none."}
        )
    metric.full_clean(exclude=["experiment", "event_type", "refund_event_type", "denominator_event_type"])
    return metric


def experiment_metrics_ensure(*, experiment: Experiment, metrics: Sequence[MetricSpec]) -> int:
    """Add the metrics ``experiment`` lacks (same event type, role and kind; for a ratio
    also the same parts), in any status: a metric is read from the event stream, so one
    added later still covers the whole run. Unknown event types are skipped. Return how
    many were added."""
    added = 0
    for spec in metrics:
        try:
            metric = _metric_from_spec(experiment, spec)
        except ValidationError:
            continue
        same = Metric.objects.filter(
            experiment=experiment, event_type=metric.event_type, role=metric.role, kind=metric.kind
        )
        if metric.kind == Metric.Kind.RATIO:
            same = same.filter(
                numerator_part=metric.numerator_part,
                denominator_event_type=metric.denominator_event_type,
                denominator_part=metric.denominator_part,
            )
        if not same.exists():
            metric.save()
            added += 1
    return added


def _targeting_apply(experiment: Experiment, targeting: Targeting, *, save: bool) -> None:
    if not save:
        experiment.namespace_id = targeting.namespace_id
        experiment.namespace_start = targeting.namespace_start
        experiment.namespace_end = targeting.namespace_end
        experiment.holdout_id = targeting.holdout_id
        return
    experiment.include_segments.set(targeting.include_segment_ids)
    experiment.exclude_segments.set(targeting.exclude_segment_ids)
    experiment.include_layers.set(targeting.include_layer_ids)
    experiment.exclude_layers.set(targeting.exclude_layer_ids)


def _variants_write(experiment: Experiment, variants: Sequence[VariantSpec]) -> None:
    """Upsert the given variants in order; deactivate the others (never delete: earlier
    phases' assignments point at them)."""
    existing = {v.key: v for v in experiment.variants.all()}
    keys = [v.key for v in variants]
    # The one-control constraint is checked row by row: clear the flag first.
    Variant.objects.filter(experiment=experiment, is_control=True).exclude(
        key__in=[v.key for v in variants if v.is_control]
    ).update(is_control=False)
    for position, spec in enumerate(variants):
        variant = existing.get(spec.key) or Variant(experiment=experiment, key=spec.key)
        variant.name = spec.name or spec.key
        variant.weight = Decimal(spec.weight)
        variant.payload = dict(spec.payload)
        variant.is_control = spec.is_control
        variant.position = position
        variant.is_active = True
        variant.full_clean(exclude=["experiment"], validate_unique=False, validate_constraints=False)
        variant.save()
    Variant.objects.filter(experiment=experiment).exclude(key__in=keys).update(
        is_active=False, is_control=False, weight=Decimal(0)
    )


# --- Transitions -----------------------------------------------------------------------------

S = Experiment.Status


def _locked(experiment: Experiment) -> Experiment:
    return Experiment.objects.select_for_update().get(pk=experiment.pk)


def _transition_check(experiment: Experiment, action: str, allowed: Iterable[str]) -> None:
    if experiment.status not in allowed:
        state = experiment.get_status_display().lower()
        raise ValidationError({"status": f"Cannot {action} experiment '{experiment.key}': it is {state}."})


def _refresh(instance: Experiment, locked: Experiment) -> Experiment:
    for name in ("status", "started_at", "stopped_at", "coverage"):
        setattr(instance, name, getattr(locked, name))
    return instance


def _phase_open(*, experiment: Experiment, number: int, coverage: Decimal, reason: str, at: dt.datetime) -> Phase:
    allocation = [{"variant": v.key, "weight": str(v.weight)} for v in _variants_of(experiment)]
    seed = experiment.key if number == 1 else f"{experiment.key}:phase-{number}"
    phase = Phase.objects.create(
        experiment=experiment,
        number=number,
        seed=seed,
        coverage=coverage,
        weights=allocation,
        reason=reason,
        started_at=at,
    )
    _plan_record(experiment=experiment, phase=phase, at=at)
    return phase


def _plan_validate(experiment: Experiment, at: dt.datetime) -> None:
    """What a phase may not start without: a horizon for a fixed-horizon test, known
    confirmatory dimensions, a horizon in the future."""
    errors: dict[str, str] = {}
    dimensions = experiment.confirmatory_dimensions
    if not isinstance(dimensions, list) or not all(isinstance(d, str) for d in dimensions):
        errors["confirmatory_dimensions"] = "A list of dimension keys."
    else:
        unknown = sorted(set(dimensions) - set(segment_selectors.dimension_layers(dimension_keys=dimensions)))
        if unknown:
            errors["confirmatory_dimensions"] = f"Unknown dimension(s): {', '.join(unknown)}."
    if (
        experiment.inference_mode == Experiment.InferenceMode.FIXED
        and not experiment.planned_sample_size
        and experiment.planned_end_at is None
    ):
        errors["planned_sample_size"] = (
            "A fixed-horizon test needs a planned horizon: a sample size or an end date "
            "(verdicts are withheld until it is reached)."
        )
    if experiment.planned_end_at is not None and experiment.planned_end_at <= at:
        errors["planned_end_at"] = "The planned end must be after the start."
    if experiment.correction not in Experiment.Correction.values:
        errors["correction"] = f"Choose one of {', '.join(Experiment.Correction.values)}."
    if errors:
        raise ValidationError(errors)


def _plan_record(*, experiment: Experiment, phase: Phase, at: dt.datetime) -> AnalysisPlan:
    """Freeze the experiment's plan fields and metrics into the phase's plan."""
    _plan_validate(experiment, at)
    metrics = list(
        Metric.objects.filter(experiment=experiment)
        .select_related("event_type", "denominator_event_type")
        .order_by("pk")
    )
    return AnalysisPlan.objects.create(
        phase=phase,
        primary_metric=next((m.key for m in metrics if m.role == Metric.Role.PRIMARY), ""),
        secondary_metrics=[m.key for m in metrics if m.role == Metric.Role.SECONDARY],
        guardrail_metrics=[
            {"metric": m.key, "margin": str(m.noninferiority_margin)}
            for m in metrics
            if m.role == Metric.Role.GUARDRAIL
        ],
        confirmatory_dimensions=list(experiment.confirmatory_dimensions),
        inference_mode=experiment.inference_mode,
        planned_sample_size=experiment.planned_sample_size,
        planned_end_at=experiment.planned_end_at,
        fixed_audience=experiment.fixed_audience,
        minimum_detectable_effect=experiment.minimum_detectable_effect,
        alpha=experiment.alpha,
        correction=experiment.correction,
        recorded_at=at,
    )


@transaction.atomic
def experiment_plan_update(
    *,
    experiment: Experiment,
    changes: dict[str, Any],
    start_new_phase: bool = False,
    reason: str = "",
    at: dt.datetime | None = None,
) -> Experiment:
    """Change the analysis plan (``Experiment.PLAN_FIELDS``).

    Draft: saved, frozen at start. Running or paused: refused (400 naming the fields)
    unless ``start_new_phase``, which re-randomizes everyone under the new plan; the
    old phase keeps its own plan. Stopped: refused.
    """
    at = at or timezone.now()
    locked = _locked(experiment)
    unknown = sorted(set(changes) - set(Experiment.PLAN_FIELDS))
    if unknown:
        raise ValidationError({name: "Not a field of the analysis plan." for name in unknown})
    changed = {name: value for name, value in changes.items() if getattr(locked, name) != value}
    if not changed:
        return experiment
    if locked.status == S.STOPPED:
        raise ValidationError({name: f"Experiment '{locked.key}' is stopped; its plan is final." for name in changed})
    if locked.is_active and not start_new_phase:
        raise ValidationError(
            {
                name: "The analysis plan was recorded when the phase started and cannot change while the "
                "experiment is running or paused. Start a new phase to change it."
                for name in changed
            }
        )
    for name, value in changed.items():
        setattr(locked, name, value)
    locked.full_clean(exclude=["owner"], validate_unique=False)
    if locked.is_active:
        _plan_validate(locked, at)
    locked.save(update_fields=list(changed))
    if locked.is_active:
        experiment_new_phase(experiment=locked, reason=reason or "Analysis plan changed", at=at)
    experiment.refresh_from_db()
    return experiment


@transaction.atomic
def experiment_start(*, experiment: Experiment, at: dt.datetime | None = None) -> Experiment:
    """draft → running: validate, claim the namespace range, open phase 1 (seed = key)."""
    at = at or timezone.now()
    locked = _locked(experiment)
    _transition_check(locked, "start", [S.DRAFT])
    _key_validate(locked.key)
    variants_validate(variants=_variants_of(locked))
    namespace_overlap_check(
        experiment=locked,
        namespace_id=locked.namespace_id,
        start=Decimal(locked.namespace_start),
        end=Decimal(locked.namespace_end),
    )
    _phase_open(experiment=locked, number=1, coverage=Decimal(locked.coverage), reason="Started", at=at)
    locked.status = S.RUNNING
    locked.started_at = at
    locked.save(update_fields=["status", "started_at"])
    experiment_configs_invalidate()
    return _refresh(experiment, locked)


@transaction.atomic
def experiment_pause(*, experiment: Experiment) -> Experiment:
    """running → paused: customers get ``not_running`` and no new assignments; the phase,
    its assignments and the namespace range are kept."""
    locked = _locked(experiment)
    _transition_check(locked, "pause", [S.RUNNING])
    locked.status = S.PAUSED
    locked.save(update_fields=["status"])
    experiment_configs_invalidate()
    return _refresh(experiment, locked)


@transaction.atomic
def experiment_resume(*, experiment: Experiment) -> Experiment:
    """paused → running, in the same phase (everyone keeps their variant)."""
    locked = _locked(experiment)
    _transition_check(locked, "resume", [S.PAUSED])
    locked.status = S.RUNNING
    locked.save(update_fields=["status"])
    experiment_configs_invalidate()
    return _refresh(experiment, locked)


@transaction.atomic
def experiment_stop(*, experiment: Experiment, at: dt.datetime | None = None) -> Experiment:
    """running or paused → stopped (final): the phase is closed, the namespace range freed."""
    at = at or timezone.now()
    locked = _locked(experiment)
    _transition_check(locked, "stop", [S.RUNNING, S.PAUSED])
    Phase.objects.filter(experiment=locked, ended_at__isnull=True).update(ended_at=at)
    locked.status = S.STOPPED
    locked.stopped_at = at
    locked.save(update_fields=["status", "stopped_at"])
    experiment_configs_invalidate()
    return _refresh(experiment, locked)


# Action name -> (service, statuses it applies to): what the admin offers per status.
TRANSITIONS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "start": (experiment_start, (S.DRAFT,)),
    "pause": (experiment_pause, (S.RUNNING,)),
    "resume": (experiment_resume, (S.PAUSED,)),
    "stop": (experiment_stop, (S.RUNNING, S.PAUSED)),
}


# --- Allocation and phases -----------------------------------------------------------------


@transaction.atomic
def experiment_allocation_update(
    *,
    experiment: Experiment,
    coverage: Decimal,
    variants: Sequence[VariantSpec],
    targeting: Targeting | None = None,
    start_new_phase: bool = False,
    reason: str = "",
    at: dt.datetime | None = None,
) -> Experiment:
    """Change coverage, variants (weights, names, payloads) and, optionally, targeting.

    Draft: anything goes. Running or paused without ``start_new_phase``: coverage may
    only rise, weights/names/payloads may change; the variant keys, the control and the
    targeting must stay (sticky assignments would otherwise no longer match the phase's
    definition) -- the error names the field and says to start a new phase. With
    ``start_new_phase`` everything may change and a new phase (new seed) begins.
    Stopped experiments cannot change.
    """
    at = at or timezone.now()
    locked = _locked(experiment)
    if locked.status == S.STOPPED:
        raise ValidationError({"status": f"Experiment '{locked.key}' is stopped; its allocation cannot change."})
    variants_validate(variants=variants)
    coverage = _coverage_validate(coverage)
    current_targeting = Targeting.of(locked)
    targeting = (targeting or current_targeting).normalized()
    phase = Phase.objects.filter(experiment=locked, ended_at__isnull=True).first()
    if locked.is_active and not start_new_phase:
        assert phase is not None
        _in_phase_change_check(locked, phase, coverage, variants, targeting, current_targeting.normalized())
    if locked.is_active and targeting != current_targeting.normalized():
        namespace_overlap_check(
            experiment=locked,
            namespace_id=targeting.namespace_id,
            start=targeting.namespace_start,
            end=targeting.namespace_end,
        )
    _variants_write(locked, variants)
    _targeting_apply(locked, targeting, save=False)
    locked.coverage = coverage
    locked.full_clean(exclude=["owner"], validate_unique=False)
    locked.save()
    _targeting_apply(locked, targeting, save=True)
    if locked.is_active:
        assert phase is not None
        if start_new_phase:
            phase.ended_at = at
            phase.save(update_fields=["ended_at"])
            _phase_open(
                experiment=locked,
                number=phase.number + 1,
                coverage=coverage,
                reason=reason or "New phase",
                at=at,
            )
        else:
            phase.coverage = coverage
            phase.weights = [{"variant": v.key, "weight": str(Decimal(v.weight))} for v in variants]
            phase.save(update_fields=["coverage", "weights"])
    experiment_configs_invalidate()
    experiment.refresh_from_db()
    return experiment


def _in_phase_change_check(
    experiment: Experiment,
    phase: Phase,
    coverage: Decimal,
    variants: Sequence[VariantSpec],
    targeting: Targeting,
    current: Targeting,
) -> None:
    hint = "Start a new phase to make this change."
    errors: dict[str, str] = {}
    if coverage < phase.coverage:
        errors["coverage"] = (
            f"Coverage cannot be lowered from {phase.coverage} to {coverage} while the experiment is "
            f"{experiment.get_status_display().lower()}: customers already assigned would stay in. {hint}"
        )
    phase_keys = [item["variant"] for item in phase.weights]
    new_keys = [v.key for v in variants]
    if new_keys != phase_keys:
        removed = sorted(set(phase_keys) - set(new_keys))
        added = sorted(set(new_keys) - set(phase_keys))
        what = "; ".join(
            part
            for part in (
                f"removes {', '.join(removed)}" if removed else "",
                f"adds {', '.join(added)}" if added else "",
                "reorders the variants" if not removed and not added else "",
            )
            if part
        )
        errors["variants"] = f"The variants of a running phase are fixed (this change {what}). {hint}"
    else:
        current_control = Variant.objects.filter(experiment=experiment, is_control=True).values_list("key", flat=True)
        new_control = [v.key for v in variants if v.is_control]
        if list(current_control) != new_control:
            errors["variants"] = f"The control variant of a running phase is fixed. {hint}"
    for name in (
        "include_segment_ids",
        "exclude_segment_ids",
        "include_layer_ids",
        "exclude_layer_ids",
        "namespace_id",
        "namespace_start",
        "namespace_end",
        "holdout_id",
    ):
        if getattr(targeting, name) != getattr(current, name):
            field_name = name.removesuffix("_ids").removesuffix("_id")
            errors[field_name] = f"Targeting, namespace and holdout are fixed within a phase. {hint}"
    if errors:
        raise ValidationError(errors)


def experiment_new_phase(*, experiment: Experiment, reason: str, at: dt.datetime | None = None) -> Experiment:
    """Re-randomize a running or paused experiment with its current configuration."""
    if not experiment.is_active:
        raise ValidationError(
            {"status": f"Only a running or paused experiment can start a new phase ({experiment.key})."}
        )
    return experiment_allocation_update(
        experiment=experiment,
        coverage=Decimal(experiment.coverage),
        variants=_variants_of(experiment),
        start_new_phase=True,
        reason=reason,
        at=at,
    )


# --- Holdouts ------------------------------------------------------------------------------


def holdout_seed_for(key: str) -> str:
    """A holdout's hash seed: fixed at creation, never an experiment key (reserved prefix)."""
    return f"{RESERVED_KEY_PREFIX}holdout__{key}"


@transaction.atomic
def holdout_create(*, key: str, name: str, percent: Decimal, is_active: bool = True) -> Holdout:
    holdout = Holdout(key=key, name=name, percent=Decimal(percent), seed=holdout_seed_for(key), is_active=is_active)
    holdout.full_clean()
    holdout.save()
    experiment_configs_invalidate()
    return holdout
