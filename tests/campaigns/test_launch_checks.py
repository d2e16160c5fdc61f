"""The pre-launch checklist (a channel without content, an empty audience, a segment never
computed, a blank treatment row) and "Duplicate as draft"."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, Treatment
from campaigns.services import editing, lifecycle
from segments.models import Segment
from tests.campaigns.builders import campaign, customers
from tests.campaigns.test_decide import _experiment

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_campaign_launch__treatment_without_content_for_a_channel__refused_naming_it(no_caps: None) -> None:
    customers(3)
    row = campaign(channels=("email", "sms"))
    bare = Treatment.objects.create(campaign=row, variant_key="", layer=None, referral_role="inviter")
    bare.contents.create(channel="email", subject="Hi", text="Hello")
    with pytest.raises(ValidationError) as caught:
        lifecycle.campaign_launch(campaign=row)
    assert any("has no sms content" in m and "inviter" in m for m in caught.value.message_dict["treatments"])


def test_campaign_launch__broadcast_audience_empty__refused(no_caps: None) -> None:
    row = campaign()
    with pytest.raises(ValidationError) as caught:
        lifecycle.campaign_launch(campaign=row)
    assert "The audience is empty" in caught.value.message_dict["audience"][0]
    customers(1)
    assert lifecycle.campaign_launch(campaign=row).status == Campaign.Status.RUNNING


def test_campaign_launch__segment_never_computed__refused_and_one_click_computes_it(growth_user, no_caps: None) -> None:  # type: ignore[no-untyped-def]
    people = customers(4)
    segment = Segment.objects.create(
        key="everyone", name="Everyone", rule={"field": "timezone", "op": "eq", "value": "UTC"}
    )
    row = campaign()
    row.include_segments.set([segment])
    client = _client(growth_user)
    # When the growth user launches from the admin
    response = client.post(reverse("admin:campaigns_campaign_transition", args=[row.pk, "launch"]), follow=True)
    # Then it is refused, saying how, with a button one click away
    html = response.content.decode()
    assert "Segment &#x27;everyone&#x27; has never been computed" in html and 'id="compute-audience"' in html
    row.refresh_from_db()
    assert row.status == Campaign.Status.DRAFT
    client.post(reverse("admin:campaigns_campaign_compute_audience", args=[row.pk]))
    segment.refresh_from_db()
    assert segment.computed_at is not None and segment.memberships.count() == len(people)
    client.post(reverse("admin:campaigns_campaign_transition", args=[row.pk, "launch"]))
    row.refresh_from_db()
    assert row.status == Campaign.Status.RUNNING


def test_admin_treatment_inline__blank_row_added__error_not_dropped(growth_user) -> None:  # type: ignore[no-untyped-def]
    row = Campaign.objects.create(key="blank", name="Blank", channels=["email"])
    data = {
        "key": "blank",
        "name": "Blank",
        "kind": "custom",
        "description": "",
        "trigger": "broadcast",
        "channels": "email",
        "channel_strategy": "first_reachable",
        "max_attempts": "5",
        "referral_reward_to": "both",
        "treatments-TOTAL_FORMS": "1",
        "treatments-INITIAL_FORMS": "0",
        "treatments-MIN_NUM_FORMS": "0",
        "treatments-MAX_NUM_FORMS": "1000",
        "treatments-0-variant_key": "",
        "treatments-0-layer": "",
        "treatments-0-referral_role": "",
        "treatments-0-offer": "",
    }
    response = _client(growth_user).post(reverse("admin:campaigns_campaign_change", args=[row.pk]), data)
    assert response.status_code == 200  # the form again, with the error
    assert "A treatment row is blank" in response.content.decode()


def test_campaign_duplicate__finished_campaign__draft_copy_with_own_experiment(growth_user, no_caps: None) -> None:  # type: ignore[no-untyped-def]
    customers(2)
    row = campaign(key="orig", experiment=_experiment("orig-x"))
    segment = Segment.objects.create(key="s", name="S", rule={"all": []}, computed_at=timezone.now())
    row.exclude_segments.set([segment])
    lifecycle.campaign_launch(campaign=row)
    lifecycle.campaign_finish(campaign=row)

    response = _client(growth_user).post(reverse("admin:campaigns_campaign_duplicate", args=[row.pk]))

    copy = Campaign.objects.get(key="orig-copy")
    assert response.status_code == 302 and response["Location"].endswith(f"/{copy.pk}/change/")
    assert copy.status == Campaign.Status.DRAFT and copy.started_at is None and copy.version == 1
    assert list(copy.exclude_segments.all()) == [segment]
    assert copy.experiment_id != row.experiment_id and copy.experiment.status == "draft"
    assert set(copy.experiment.variants.values_list("key", flat=True)) == {"control", "offer"}
    treatment = copy.treatments.get()
    assert treatment.offer_id == row.treatments.get().offer_id
    assert treatment.contents.get().subject == row.treatments.get().contents.get().subject
    assert editing.campaign_duplicate(campaign=row).key == "orig-copy2"
