"""The assignment API and experiments a campaign owns (``managed_by``): read, never written."""

from __future__ import annotations

import pytest

from experiments import services
from experiments.models import Assignment

pytestmark = pytest.mark.django_db

URL = "/api/v1/customers/{}/assignments"


@pytest.fixture
def reader(api_client_factory):  # type: ignore[no-untyped-def]
    return api_client_factory("offers:read")


def test_get_assignments__managed_experiment_customer_undecided__campaign_managed_nothing_written(
    reader, make_experiment, make_customers
) -> None:
    # Given a campaign's experiment next to an app's own experiment
    managed = make_experiment("winback-split")
    make_experiment("pricing-page")
    services.experiment_manager_set(experiment=managed, managed_by="campaign:7")
    customer = make_customers(1)[0]
    # When an app asks for the customer's assignments
    body = reader.get(URL.format(customer.external_id)).json()
    # Then the campaign's experiment is reported with its reason and nothing is written in it
    by_key = {row["experiment"]: row for row in body["results"]}
    assert by_key["winback-split"] == {
        "experiment": "winback-split",
        "variant": None,
        "is_control": False,
        "payload": {},
        "in_experiment": False,
        "reason": "campaign_managed",
    }
    assert by_key["pricing-page"]["reason"] == "assigned"
    assert not Assignment.objects.filter(experiment=managed).exists()


def test_get_assignments__managed_experiment_customer_assigned_by_owner__variant_reported_not_exposed(
    reader, make_experiment, make_customers
) -> None:
    managed = make_experiment("renewal-split")
    services.experiment_manager_set(experiment=managed, managed_by="campaign:7")
    customer = make_customers(1)[0]
    # The owner assigns (its own door), without exposing yet.
    decision = services.assignment_get_or_create(experiment=managed, customer=customer, manager="campaign:7")
    assert decision.reason == "assigned"

    body = reader.get(URL.format(customer.external_id)).json()

    assert body["results"][0]["variant"] == decision.variant_key
    assert body["results"][0]["reason"] == "assigned"
    row = Assignment.objects.get(experiment=managed, customer=customer)
    assert row.first_exposed_at is None and row.exposure_count == 0


def test_experiment_manager_set__other_owner__refused_and_release_only_by_owner(make_experiment) -> None:
    from django.core.exceptions import ValidationError

    experiment = make_experiment("shared")
    services.experiment_manager_set(experiment=experiment, managed_by="campaign:1")
    with pytest.raises(ValidationError):
        services.experiment_manager_set(experiment=experiment, managed_by="campaign:2")
    services.experiment_manager_release(experiment=experiment, managed_by="campaign:2")
    experiment.refresh_from_db()
    assert experiment.managed_by == "campaign:1"
    services.experiment_manager_release(experiment=experiment, managed_by="campaign:1")
    experiment.refresh_from_db()
    assert experiment.managed_by == ""


def test_post_exposure__managed_experiment__400_naming_experiment_nothing_recorded(
    api_client_factory, make_experiment, make_customers
) -> None:  # type: ignore[no-untyped-def]
    managed = make_experiment("campaign-split")
    customer = make_customers(1)[0]
    services.experiment_manager_set(experiment=managed, managed_by="campaign:3")
    services.assignment_get_or_create(experiment=managed, customer=customer, manager="campaign:3")
    response = api_client_factory("events:write").post(
        "/api/v1/exposures",
        {"customer_id": customer.external_id, "experiment": "campaign-split", "variant": "control"},
        format="json",
    )
    assert response.status_code == 400 and "campaign_managed" in response.json()["errors"]["experiment"][0]
    assert Assignment.objects.get(experiment=managed).exposure_count == 0


def test_audience_assign__managed_experiment_other_caller__nothing_written_campaign_managed(
    make_experiment, make_customers
) -> None:
    # Given a campaign's experiment and customers in its targeting
    managed = make_experiment("winback-bulk")
    services.experiment_manager_set(experiment=managed, managed_by="campaign:9")
    make_customers(30)
    # When the generic bulk path (the experiments.audience_assign task) runs on it
    from experiments import tasks

    tasks.experiment_audience_assign.apply(args=[managed.pk]).get()
    result = services.audience_assign(experiment=managed)
    # Then nobody is assigned or held out, and the reason says whose it is
    assert result.assigned == 0 and result.excluded["campaign_managed"] == 30
    assert not Assignment.objects.filter(experiment=managed).exists()
    # while its manager still splits it
    assert services.audience_assign(experiment=managed, manager="campaign:9").assigned > 0


def test_experiment_manager_set__api_assigned_in_current_phase__refused_until_new_phase(
    reader, make_experiment, make_customers
) -> None:
    from django.core.exceptions import ValidationError

    # Given an experiment nobody owns yet, in which the assignment API assigned a customer
    experiment = make_experiment("not-yet-owned")
    customer = make_customers(1)[0]
    assert reader.get(URL.format(customer.external_id)).json()["results"][0]["reason"] == "assigned"
    # When a campaign claims it, then it is refused: the report would count that customer
    with pytest.raises(ValidationError) as caught:
        services.experiment_manager_set(experiment=experiment, managed_by="campaign:5")
    assert "1 customer(s) in phase 1" in caught.value.message_dict["experiment"][0]
    experiment.refresh_from_db()
    assert experiment.managed_by == ""
    # and a new phase starts it clean
    services.experiment_new_phase(experiment=experiment, reason="owned by a campaign")
    services.experiment_manager_set(experiment=experiment, managed_by="campaign:5")
    experiment.refresh_from_db()
    assert experiment.managed_by == "campaign:5"
