"""A campaign's experiment belongs to it: nobody else assigns or exposes in it, before or
after launch (issue 16, bullet 5)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from campaigns.models import Campaign, Recipient
from campaigns.services import lifecycle
from experiments import services as experiment_services
from experiments.models import Assignment
from tests.campaigns.builders import campaign, customers, run_broadcast
from tests.campaigns.test_decide import _experiment

pytestmark = pytest.mark.django_db


def test_campaign_launch__experiment_filled_by_the_api_while_draft__refused_until_new_phase(
    no_caps: None, api_client_factory
) -> None:  # type: ignore[no-untyped-def]
    # Given a draft campaign on a running experiment, and an app that asked the generic API
    # about a customer meanwhile (the experiment was nobody's yet: the API assigned them)
    people = customers(40)
    row = campaign(key="draft-owned", experiment=_experiment("draft-owned-x"))
    reader = api_client_factory("offers:read")
    assert reader.get(f"/api/v1/customers/{people[0].external_id}/assignments").json()["results"][0]["in_experiment"]
    # When the campaign is launched, then it is refused, naming the experiment
    with pytest.raises(ValidationError) as caught:
        lifecycle.campaign_launch(campaign=row)
    assert "assigned outside this campaign" in caught.value.message_dict["experiment"][0]
    row.refresh_from_db()
    assert row.status == Campaign.Status.DRAFT
    # After a new phase, it launches, and every assignment of the phase is the campaign's decision
    experiment_services.experiment_new_phase(experiment=row.experiment, reason="campaign launch")
    run_broadcast(row)
    phase = row.experiment.phases.get(ended_at__isnull=True)
    assigned = set(Assignment.objects.filter(phase=phase).values_list("customer_id", flat=True))
    decided = set(
        Recipient.objects.filter(campaign=row, outcome__in=["treated", "control"]).values_list("customer_id", flat=True)
    )
    assert assigned == decided and len(assigned) > 0
