"""The experiments admin: editor with inline variants, transitions guarded by permissions,
read-only assignment fields once running, the allocation / new-phase flow, live counts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from experiments import services
from experiments.models import Experiment, Phase, Variant
from experiments.selectors import experiment_current_phase

pytestmark = pytest.mark.django_db

ADD = "/admin/experiments/experiment/add/"


def _management(prefix: str, total: int, initial: int = 0) -> dict[str, Any]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def _add_data(weights: tuple[str, str], *, controls: tuple[bool, bool] = (True, False)) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": "admin-made",
        "name": "Admin made",
        "hypothesis": "",
        "minimum_detectable_effect": "0.10",
        "coverage": "1",
        "namespace_start": "0",
        "namespace_end": "1",
        **_management("variants", 2),
        **_management("metrics", 0),
        **_management("phases", 0),
    }
    for i, (key, weight, control) in enumerate(zip(("control", "treatment"), weights, controls, strict=True)):
        data.update(
            {
                f"variants-{i}-position": str(i),
                f"variants-{i}-key": key,
                f"variants-{i}-name": key.title(),
                f"variants-{i}-weight": weight,
                f"variants-{i}-payload": "{}",
            }
        )
        if control:
            data[f"variants-{i}-is_control"] = "on"
    return data


@pytest.fixture
def growth(client, growth_user):  # type: ignore[no-untyped-def]
    client.force_login(growth_user)
    return client


@pytest.fixture
def marketer(client, marketer_user):  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)
    return client


def test_admin_add__variants_summing_to_100__created_in_draft(growth) -> None:
    response = growth.post(ADD, _add_data(("0.3000", "0.7000")))

    assert response.status_code == 302, response.content.decode()[:2000]
    experiment = Experiment.objects.get(key="admin-made")
    assert experiment.status == "draft"
    assert list(experiment.variants.values_list("key", "weight", "is_control")) == [
        ("control", Decimal("0.3"), True),
        ("treatment", Decimal("0.7"), False),
    ]


@pytest.mark.parametrize(
    ("weights", "controls", "message"),
    [
        (("0.5", "0.4"), (True, False), "must sum to 100%"),
        (("0.5", "0.5"), (False, False), "Exactly one variant must be the control"),
    ],
)
def test_admin_add__invalid_variants__form_error_and_nothing_saved(growth, weights, controls, message) -> None:
    response = growth.post(ADD, _add_data(weights, controls=controls))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Experiment.objects.exists()


def test_admin_transition__growth__starts_and_pauses(growth, make_experiment) -> None:
    experiment = make_experiment("via-admin", start=False)
    page = growth.get(f"/admin/experiments/experiment/{experiment.pk}/change/").content.decode()
    assert 'value="Start"' in page and 'value="Pause"' not in page

    growth.post(f"/admin/experiments/experiment/{experiment.pk}/transition/start/")
    experiment.refresh_from_db()
    assert experiment.status == "running" and experiment_current_phase(experiment=experiment).number == 1
    growth.post(f"/admin/experiments/experiment/{experiment.pk}/transition/pause/")
    experiment.refresh_from_db()
    assert experiment.status == "paused"


def test_admin_transition__invalid__message_not_500(growth, make_experiment) -> None:
    experiment = make_experiment("via-admin")
    response = growth.post(f"/admin/experiments/experiment/{experiment.pk}/transition/start/", follow=True)
    assert response.status_code == 200
    assert "Cannot start experiment" in response.content.decode()


def test_admin__marketer__reads_but_changes_nothing(marketer, make_experiment) -> None:
    experiment = make_experiment("read-only")
    change = f"/admin/experiments/experiment/{experiment.pk}/change/"

    page = marketer.get(change)
    assert page.status_code == 200
    assert 'value="Pause"' not in page.content.decode()
    assert "Change allocation" not in page.content.decode()
    assert marketer.post(f"/admin/experiments/experiment/{experiment.pk}/transition/pause/").status_code == 403
    assert marketer.get(f"/admin/experiments/experiment/{experiment.pk}/allocation/").status_code == 403
    assert marketer.post(change, {"name": "Renamed"}).status_code == 403
    assert marketer.get(ADD).status_code == 403
    listing = marketer.post(
        "/admin/experiments/experiment/", {"action": "stop_selected", "_selected_action": [experiment.pk]}
    )
    assert listing.status_code in (200, 302)
    experiment.refresh_from_db()
    assert experiment.status == "running" and experiment.name == "Read Only"
    assert not marketer_has_status_permission(marketer)


def marketer_has_status_permission(client) -> bool:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(pk=client.session["_auth_user_id"])
    return user.has_perm("experiments.change_experiment_status")


def test_admin_change__running__assignment_fields_read_only_and_live_counts(
    growth, make_experiment, make_customers
) -> None:
    experiment = make_experiment("running", coverage="0.5")
    for c in make_customers(40):
        services.assignment_get_or_create(experiment=experiment, customer=c, expose=True)
    assigned = experiment.assignments.count()

    page = growth.get(f"/admin/experiments/experiment/{experiment.pk}/change/").content.decode()

    assert 'name="coverage"' not in page and 'name="variants-0-weight"' not in page
    assert 'name="name"' in page  # still editable
    assert "experiment-live-counts" in page
    counts = {v: 0 for v in ("control", "treatment")}
    for key, n in experiment.assignments.values_list("variant__key").annotate(n=models_count()):
        counts[key] = n
    assert sum(counts.values()) == assigned
    for key, n in counts.items():
        assert f"<td>{key}{' (control)' if key == 'control' else ''}</td><td>{n}</td><td>{n}</td>" in page


def models_count():  # type: ignore[no-untyped-def]
    from django.db.models import Count

    return Count("id")


def _allocation_data(coverage: str, weights: tuple[str, str], **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"coverage": coverage, **_management("variants", 2, 2), **extra}
    for i, (key, weight) in enumerate(zip(("control", "treatment"), weights, strict=True)):
        data.update(
            {
                f"variants-{i}-key": key,
                f"variants-{i}-name": key.title(),
                f"variants-{i}-weight": weight,
                f"variants-{i}-payload": "{}",
            }
        )
    data["variants-0-is_control"] = "on"
    return data


def test_admin_allocation__raise_coverage__same_phase(growth, make_experiment) -> None:
    experiment = make_experiment("alloc", coverage="0.2")
    url = f"/admin/experiments/experiment/{experiment.pk}/allocation/"
    assert growth.get(url).status_code == 200

    response = growth.post(url, _allocation_data("0.4", ("0.4", "0.6")))

    assert response.status_code == 302
    phase = experiment_current_phase(experiment=experiment)
    assert phase.number == 1 and phase.coverage == Decimal("0.4")
    assert Variant.objects.get(experiment=experiment, key="treatment").weight == Decimal("0.6")


def test_admin_allocation__lower_coverage__refused_then_new_phase(growth, make_experiment) -> None:
    experiment = make_experiment("alloc", coverage="0.5")
    url = f"/admin/experiments/experiment/{experiment.pk}/allocation/"

    refused = growth.post(url, _allocation_data("0.3", ("0.5", "0.5")))
    no_reason = growth.post(url, _allocation_data("0.3", ("0.5", "0.5"), start_new_phase="on"))
    accepted = growth.post(url, _allocation_data("0.3", ("0.5", "0.5"), start_new_phase="on", reason="smaller"))

    assert refused.status_code == 200 and "cannot be lowered" in refused.content.decode()
    assert no_reason.status_code == 200 and "Say why" in no_reason.content.decode()
    assert accepted.status_code == 302
    assert list(Phase.objects.filter(experiment=experiment).values_list("number", "coverage")) == [
        (1, Decimal("0.5")),
        (2, Decimal("0.3")),
    ]
