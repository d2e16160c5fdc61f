"""Experiment configuration and lifecycle services."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from experiments import services
from experiments.models import Experiment, Phase, Variant
from experiments.selectors import experiment_config_get, experiment_current_phase
from tests.experiments.conftest import variant_specs

pytestmark = pytest.mark.django_db


def _errors(call, **kwargs) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as error:
        call(**kwargs)
    return error.value.message_dict


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        (variant_specs(("0.5", "0.4")), "must sum to 100% (they sum to 90%)"),
        (variant_specs(("1",)), "at least two variants"),
        (
            [services.VariantSpec(key=k, name=k, weight=Decimal("0.5")) for k in ("a", "b")],
            "Exactly one variant must be the control (found 0)",
        ),
        (
            [services.VariantSpec(key=k, name=k, weight=Decimal("0.5"), is_control=True) for k in ("a", "b")],
            "(found 2)",
        ),
        (
            [services.VariantSpec(key="a", name="a", weight=Decimal("0.5"), is_control=i == 0) for i in range(2)],
            "unique",
        ),
    ],
)
def test_experiment_create__invalid_variants__refused_naming_variants(variants, message) -> None:
    errors = _errors(services.experiment_create, key="bad", name="Bad", variants=variants)
    assert any(message in m for m in errors["variants"]), errors
    assert not Experiment.objects.exists()


def test_experiment_create__reserved_key_or_coverage__refused_naming_field() -> None:
    reserved = _errors(services.experiment_create, key="__global", name="x", variants=variant_specs(("0.5", "0.5")))
    coverage = _errors(
        services.experiment_create, key="ok", name="x", variants=variant_specs(("0.5", "0.5")), coverage=Decimal(2)
    )
    assert "key" in reserved and "coverage" in coverage


def test_lifecycle__transitions__draft_running_paused_running_stopped(make_experiment) -> None:
    experiment = make_experiment("life", start=False)
    assert experiment_config_get(experiment_id=experiment.pk) is None

    services.experiment_start(experiment=experiment)
    phase = experiment_current_phase(experiment=experiment)
    assert experiment.status == "running" and experiment.started_at is not None
    assert (phase.number, phase.seed, phase.coverage, phase.ended_at) == (1, "life", Decimal(1), None)
    assert phase.weights == [{"variant": "control", "weight": "0.5000"}, {"variant": "treatment", "weight": "0.5000"}]
    assert experiment_config_get(experiment_id=experiment.pk).is_running

    services.experiment_pause(experiment=experiment)
    assert experiment.status == "paused" and not experiment_config_get(experiment_id=experiment.pk).is_running
    services.experiment_resume(experiment=experiment)
    assert experiment.status == "running"
    services.experiment_stop(experiment=experiment)

    assert experiment.status == "stopped" and experiment.stopped_at is not None
    assert Phase.objects.get(pk=phase.pk).ended_at == experiment.stopped_at
    assert experiment_config_get(experiment_id=experiment.pk) is None


@pytest.mark.parametrize(
    ("status", "action"),
    [
        ("draft", services.experiment_pause),
        ("draft", services.experiment_resume),
        ("draft", services.experiment_stop),
        ("running", services.experiment_start),
        ("running", services.experiment_resume),
        ("stopped", services.experiment_start),
        ("stopped", services.experiment_resume),
    ],
)
def test_lifecycle__invalid_transition__refused_naming_status(make_experiment, status, action) -> None:
    experiment = make_experiment(f"t-{status}", start=status != "draft")
    if status == "stopped":
        services.experiment_stop(experiment=experiment)
    errors = _errors(action, experiment=experiment)
    assert "status" in errors


def test_experiment_start__invalid_variants_edited_directly__refused(make_experiment) -> None:
    experiment = make_experiment("edited", start=False)
    Variant.objects.filter(experiment=experiment, key="treatment").update(weight=Decimal("0.2"))
    errors = _errors(services.experiment_start, experiment=experiment)
    assert "sum to 100%" in errors["variants"][0]


def test_allocation_update__targeting_change_running__refused_unless_new_phase(make_experiment, holdout) -> None:
    experiment = make_experiment("targeting")
    targeting = services.Targeting(holdout_id=holdout.pk)

    errors = _errors(
        services.experiment_allocation_update,
        experiment=experiment,
        coverage=Decimal(1),
        variants=variant_specs(("0.5", "0.5")),
        targeting=targeting,
    )
    services.experiment_allocation_update(
        experiment=experiment,
        coverage=Decimal(1),
        variants=variant_specs(("0.5", "0.5")),
        targeting=targeting,
        start_new_phase=True,
    )

    assert "holdout" in errors
    assert experiment.holdout_id == holdout.pk
    assert experiment_current_phase(experiment=experiment).number == 2


def test_allocation_update__draft__anything_goes_and_no_phase(make_experiment) -> None:
    experiment = make_experiment("draft-edit", start=False)
    services.experiment_allocation_update(
        experiment=experiment, coverage=Decimal("0.3"), variants=variant_specs(("0.2", "0.3", "0.5"))
    )
    assert list(Variant.objects.filter(experiment=experiment, is_active=True).values_list("key", flat=True)) == [
        "control",
        "treatment1",
        "treatment2",
    ]
    assert not Variant.objects.get(experiment=experiment, key="treatment").is_active
    assert not Phase.objects.filter(experiment=experiment).exists()


def test_allocation_update__change_control_running__refused(make_experiment) -> None:
    experiment = make_experiment("control-swap")
    specs = variant_specs(("0.5", "0.5"))
    swapped = [
        services.VariantSpec(key=s.key, name=s.name, weight=s.weight, payload=s.payload, is_control=not s.is_control)
        for s in specs
    ]
    errors = _errors(
        services.experiment_allocation_update, experiment=experiment, coverage=Decimal(1), variants=swapped
    )
    assert "control" in errors["variants"][0]
    services.experiment_allocation_update(
        experiment=experiment, coverage=Decimal(1), variants=swapped, start_new_phase=True
    )
    assert Variant.objects.get(experiment=experiment, is_control=True).key == "treatment"


def test_allocation_update__stopped__refused(make_experiment) -> None:
    experiment = make_experiment("done")
    services.experiment_stop(experiment=experiment)
    errors = _errors(
        services.experiment_allocation_update,
        experiment=experiment,
        coverage=Decimal(1),
        variants=variant_specs(("0.5", "0.5")),
    )
    assert "status" in errors


def test_namespace__stopped_experiment__frees_its_range(make_experiment, namespace) -> None:
    first = make_experiment("ns-1", namespace_id=namespace.pk, namespace_start="0", namespace_end="0.5")
    services.experiment_stop(experiment=first)
    second = make_experiment("ns-2", namespace_id=namespace.pk, namespace_start="0.2", namespace_end="0.7")
    assert second.status == "running"


def test_holdout_create__seed__reserved_and_stable(holdout) -> None:
    assert holdout.seed == "__holdout__global"
    holdout.percent = Decimal("20")
    holdout.save()
    holdout.refresh_from_db()
    assert holdout.seed == "__holdout__global"
