"""Integrity once live: from scheduled on, audience, experiment, channels, treatments, offers
and content are read-only (refused by the service, not only the form); a change is a new
version that keeps the history and starts a new phase of the experiment."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, CampaignVersion, Offer, Topic, Treatment
from campaigns.services import editing, lifecycle
from experiments.models import Experiment, Metric, Phase
from segments.models import Segment
from tests.campaigns.builders import campaign, customers
from tests.campaigns.test_decide import _experiment

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _running(key: str = "live") -> Campaign:
    customers(5, prefix=key)
    row = campaign(key=key, experiment=_experiment(f"{key}-x"))
    return lifecycle.campaign_launch(campaign=row)


def test_campaign_update__running_campaign_experiment_segment_channel__each_refused(no_caps: None) -> None:
    row = _running()
    other = campaign(key="other", experiment=_experiment("other-x"))
    segment = Segment.objects.create(key="vip", name="VIP", rule={"all": []})
    for changes in ({"experiment": other.experiment}, {"include_segments": [segment]}, {"channels": ["email", "sms"]}):
        with pytest.raises(ValidationError) as caught:
            editing.campaign_update(campaign=row, changes=changes)
        assert set(caught.value.message_dict) == set(changes)
    row.refresh_from_db()
    assert row.experiment_id != other.experiment_id and not row.include_segments.exists()
    assert row.channels == ["email"] and row.version == 1
    # Free text stays editable.
    assert editing.campaign_update(campaign=row, changes={"name": "Renamed"}).name == "Renamed"


def test_campaign_update__new_version__history_kept_and_experiment_new_phase(no_caps: None) -> None:
    row = _running()
    segment = Segment.objects.create(key="staff", name="Staff", rule={"all": []}, computed_at=timezone.now())

    updated = editing.campaign_update(campaign=row, changes={"exclude_segments": [segment]}, new_version=True)

    assert updated.version == 2 and list(updated.exclude_segments.all()) == [segment]
    old = CampaignVersion.objects.get(campaign=row)
    assert (old.number, old.experiment_phase) == (1, 1)
    assert old.config["exclude_segments"] == [] and old.config["treatments"][0]["contents"]["email"]["subject"]
    phases = Phase.objects.filter(experiment=row.experiment).order_by("number")
    assert [(p.number, p.ended_at is None) for p in phases] == [(1, False), (2, True)]


def test_campaign_update__new_version_switching_to_channel_without_content__refused_nothing_kept(
    no_caps: None,
) -> None:
    row = _running()
    with pytest.raises(ValidationError) as caught:
        editing.campaign_update(campaign=row, changes={"channels": ["sms"]}, new_version=True)
    assert "No treatment has sms content." in caught.value.messages
    row.refresh_from_db()
    assert row.channels == ["email"] and row.version == 1
    assert not CampaignVersion.objects.exists()
    assert Phase.objects.filter(experiment=row.experiment).count() == 1


def test_campaign_update__new_version_other_experiment__refused(no_caps: None) -> None:
    row = _running()
    other = _experiment("another")
    with pytest.raises(ValidationError) as caught:
        editing.campaign_update(campaign=row, changes={"experiment": other}, new_version=True)
    assert "experiment" in caught.value.message_dict


def test_treatments_write_check__running_campaign__refused(no_caps: None) -> None:
    row = _running()
    with pytest.raises(ValidationError):
        editing.treatments_write_check(campaign=row)
    editing.treatments_write_check(campaign=row, version_started=True)


def test_admin_change_form__status_buttons__only_valid_transitions(growth_user, no_caps: None) -> None:  # type: ignore[no-untyped-def]
    customers(2)
    draft = campaign(key="draft")
    running = lifecycle.campaign_launch(campaign=campaign(key="run"))

    def buttons(row: Campaign) -> set[str]:
        html = _client(growth_user).get(reverse("admin:campaigns_campaign_change", args=[row.pk])).content.decode()
        return {a for a in lifecycle.TRANSITIONS if f'name="_{a}"' in html}

    assert buttons(draft) == {"schedule", "launch", "finish"}
    assert buttons(running) == {"pause", "finish"}


def test_admin_change_form__running_campaign_post_other_experiment__ignored_locked(growth_user, no_caps: None) -> None:  # type: ignore[no-untyped-def]
    row = _running()
    other = _experiment("rival")
    url = reverse("admin:campaigns_campaign_change", args=[row.pk])
    client = _client(growth_user)
    page = client.get(url).content.decode()
    assert 'name="experiment"' not in page and 'id="locked-banner"' in page and "Edit as a new version" in page
    treatment = row.treatments.get()
    data = {
        "key": row.key,
        "name": "Renamed",
        "description": "",
        "experiment": other.pk,
        "channels": "email, sms",
        "send_at_0": "",
        "send_at_1": "",
        "ends_at_0": "",
        "ends_at_1": "",
        "max_attempts": "5",
        "treatments-TOTAL_FORMS": "1",
        "treatments-INITIAL_FORMS": "1",
        "treatments-MIN_NUM_FORMS": "0",
        "treatments-MAX_NUM_FORMS": "1000",
        "treatments-0-id": treatment.pk,
        "treatments-0-campaign": row.pk,
        "treatments-0-variant_key": "control",
        "treatments-0-offer": "",
    }
    response = client.post(url, data)
    assert response.status_code == 302
    row.refresh_from_db()
    treatment.refresh_from_db()
    assert row.name == "Renamed" and row.experiment_id != other.pk and row.channels == ["email"]
    assert treatment.variant_key == "" and treatment.offer_id is not None


def test_admin_new_version__treatment_offer_changed__version_and_phase(growth_user, no_caps: None) -> None:  # type: ignore[no-untyped-def]
    row = _running()
    treatment = row.treatments.get()
    better = Offer.objects.create(key="twenty", name="Twenty", benefit_kind="percent_off", value=20)
    url = reverse("admin:campaigns_treatment_change", args=[treatment.pk])
    client = _client(growth_user)
    assert 'name="offer"' not in client.get(url).content.decode()
    content = treatment.contents.get()
    form = {
        "variant_key": "",
        "layer": "",
        "referral_role": "",
        "offer": better.pk,
        "contents-TOTAL_FORMS": "1",
        "contents-INITIAL_FORMS": "1",
        "contents-MIN_NUM_FORMS": "0",
        "contents-MAX_NUM_FORMS": "1000",
        "contents-0-id": content.pk,
        "contents-0-treatment": treatment.pk,
        "contents-0-channel": "email",
        "contents-0-subject": content.subject,
        "contents-0-text": content.text,
    }
    client.post(url, form)
    treatment.refresh_from_db()
    assert treatment.offer_id != better.pk  # locked outside a new version

    response = client.post(url + "?new_version=1", form, follow=True)

    assert response.status_code == 200
    treatment.refresh_from_db()
    row.refresh_from_db()
    assert treatment.offer_id == better.pk and row.version == 2
    assert CampaignVersion.objects.get(campaign=row).config["treatments"][0]["offer_key"] == "live-offer"
    assert Phase.objects.filter(experiment=row.experiment).count() == 2
    # The offer the running campaign gives is read-only now.
    offer_page = client.get(reverse("admin:campaigns_offer_change", args=[better.pk])).content.decode()
    assert 'name="value"' not in offer_page


def test_treatment_admin__add_form__offers_only_draft_campaigns(growth_user, no_caps: None) -> None:  # type: ignore[no-untyped-def]
    running = _running()
    draft = campaign(key="drafty")
    html = _client(growth_user).get(reverse("admin:campaigns_treatment_add")).content.decode()
    select = html[html.index('name="campaign"') :]
    select = select[: select.index("</select>")]
    assert f'value="{draft.pk}"' in select and f'value="{running.pk}"' not in select
    assert Treatment.objects.filter(campaign=running).count() == 1


def test_admin_campaign_new_version__invalid_then_valid__refused_then_version_two(growth_user, no_caps: None) -> None:  # type: ignore[no-untyped-def]
    row = _running()
    treatment = row.treatments.get()
    url = reverse("admin:campaigns_campaign_change", args=[row.pk]) + "?new_version=1"
    data = {
        "key": row.key,
        "name": row.name,
        "description": "",
        "channels": "email, sms",
        "trigger": "broadcast",
        "channel_strategy": "first_reachable",
        "max_attempts": "5",
        "referral_reward_to": "both",
        "send_at_0": "",
        "send_at_1": "",
        "ends_at_0": "",
        "ends_at_1": "",
        "treatments-TOTAL_FORMS": "1",
        "treatments-INITIAL_FORMS": "1",
        "treatments-MIN_NUM_FORMS": "0",
        "treatments-MAX_NUM_FORMS": "1000",
        "treatments-0-id": treatment.pk,
        "treatments-0-campaign": row.pk,
        "treatments-0-variant_key": "",
        "treatments-0-offer": treatment.offer_id,
    }
    client = _client(growth_user)
    refused = client.post(url, data, follow=True)
    assert "New version not saved" in refused.content.decode()
    row.refresh_from_db()
    assert row.channels == ["email"] and row.version == 1 and not row.versions.exists()

    client.post(url, {**data, "channels": "email", "channel_strategy": "all"})

    row.refresh_from_db()
    assert (row.version, row.channel_strategy) == (2, "all")
    assert row.versions.get().config["channel_strategy"] == "first_reachable"


def test_campaign_update__new_version__new_phase_has_its_own_frozen_plan_with_guardrails(no_caps: None) -> None:
    # Given a running campaign (its launch ensured the guardrail metrics after phase 1 opened)
    row = _running()
    segment = Segment.objects.create(key="staff", name="Staff", rule={"all": []}, computed_at=timezone.now())
    # When a new version starts
    editing.campaign_update(campaign=row, changes={"exclude_segments": [segment]}, new_version=True)
    # Then phase 2 has its own analysis plan, recorded by the experiments' lifecycle, which
    # now names the guardrails; phase 1 keeps the plan it started with
    plans = {p.number: p.plan for p in Phase.objects.filter(experiment=row.experiment).select_related("plan")}
    assert set(plans) == {1, 2}
    assert plans[2].recorded_at >= plans[1].recorded_at
    assert {g["metric"] for g in plans[2].guardrail_metrics} >= {"unsubscribe", "complaint", "bounce"}


def test_campaign_update__running_campaign_topic__refused_unless_new_version(no_caps: None) -> None:
    # The topic decides whose opt-outs stop a message: part of who gets what.
    row = _running()
    with pytest.raises(ValidationError) as caught:
        editing.campaign_update(campaign=row, changes={"topic": Topic.NEWS})
    assert set(caught.value.message_dict) == {"topic"}
    updated = editing.campaign_update(campaign=row, changes={"topic": Topic.NEWS}, new_version=True)
    assert (updated.topic, updated.version) == (Topic.NEWS, 2)
    assert CampaignVersion.objects.get(campaign=row).config["topic"] == Topic.PROMOTIONS


def test_campaign_duplicate__topic_and_analysis_plan__carried_to_the_copy(no_caps: None) -> None:
    row = _running()
    experiment = row.experiment
    Campaign.objects.filter(pk=row.pk).update(topic=Topic.RENEWALS)
    Experiment.objects.filter(pk=experiment.pk).update(
        inference_mode=Experiment.InferenceMode.FIXED, planned_sample_size=4000, correction="bh"
    )
    Metric.objects.filter(experiment=experiment, event_type__code="unsubscribe").update(
        noninferiority_margin=Decimal("0.002")
    )

    copy = editing.campaign_duplicate(campaign=row)

    assert copy.topic == Topic.RENEWALS
    assert (copy.experiment.inference_mode, copy.experiment.planned_sample_size, copy.experiment.correction) == (
        "fixed",
        4000,
        "bh",
    )
    margin = copy.experiment.metrics.get(event_type__code="unsubscribe").noninferiority_margin
    assert margin == Decimal("0.002")


def test_campaign_launch__duplicate_with_its_own_draft_experiment__launch_starts_the_experiment(no_caps: None) -> None:
    # Found in the demo soak: "Duplicate as draft" then "Launch" was refused with "experiment
    # ... is draft; start it first", sending the growth user to a second screen.
    row = _running()
    copy = editing.campaign_duplicate(campaign=row)
    assert copy.experiment.status == "draft"

    launched = lifecycle.campaign_launch(campaign=copy)

    launched.experiment.refresh_from_db()
    assert launched.status == Campaign.Status.RUNNING and launched.experiment.status == "running"
    assert Phase.objects.filter(experiment=launched.experiment).count() == 1
    assert launched.experiment.managed_by.endswith(str(copy.pk))


def test_campaign_launch__draft_experiment_held_by_another_campaign__refused(no_caps: None) -> None:
    row = _running()
    copy = editing.campaign_duplicate(campaign=row)
    third = campaign(key="third", experiment=copy.experiment)
    lifecycle.campaign_launch(campaign=copy)
    Experiment.objects.filter(pk=copy.experiment.pk).update(status="paused")

    with pytest.raises(ValidationError) as caught:
        lifecycle.campaign_launch(campaign=third)

    assert "experiment" in caught.value.message_dict


def test_campaign_duplicate__source_planned_end_passed__copy_keeps_the_duration_and_launches(no_caps: None) -> None:
    # Found in the demo soak: the copy carried the source's planned end date, already past,
    # and its launch was refused with "The planned end must be after the start".
    row = _running()
    started = timezone.now() - timezone.timedelta(days=30)
    Experiment.objects.filter(pk=row.experiment.pk).update(
        started_at=started, planned_end_at=started + timezone.timedelta(days=14)
    )

    copy = editing.campaign_duplicate(campaign=row)

    duration = copy.experiment.planned_end_at - timezone.now()
    assert timezone.timedelta(days=13, hours=23) < duration <= timezone.timedelta(days=14)
    assert lifecycle.campaign_launch(campaign=copy).status == Campaign.Status.RUNNING


def test_campaign_launch__own_draft_experiment_plan_invalid__refused_naming_the_experiment(no_caps: None) -> None:
    row = _running()
    copy = editing.campaign_duplicate(campaign=row)
    Experiment.objects.filter(pk=copy.experiment.pk).update(planned_end_at=timezone.now() - timezone.timedelta(hours=1))

    with pytest.raises(ValidationError) as caught:
        lifecycle.campaign_launch(campaign=copy)

    message = " ".join(caught.value.message_dict["experiment"])
    assert copy.experiment.key in message and "planned_end_at" in message
    copy.refresh_from_db()
    assert copy.status == Campaign.Status.DRAFT and copy.experiment.status == "draft"


def test_campaign_delete__running_campaign__refused_and_kept(no_caps: None) -> None:
    row = _running()
    with pytest.raises(ValidationError) as caught:
        editing.campaign_delete(campaign=row)
    assert "Duplicate as draft" in caught.value.messages[0]
    assert Campaign.objects.filter(pk=row.pk).exists()
    draft = campaign(key="draft-only")
    editing.campaign_delete(campaign=draft)
    assert not Campaign.objects.filter(pk=draft.pk).exists()


def test_admin_delete__running_campaign_page_and_bulk_action__refused_kept(growth_user, no_caps: None) -> None:  # type: ignore[no-untyped-def]
    row = _running()
    row.treatments.all().delete()  # nothing locked hangs off it: only the campaign's own rule refuses
    client = _client(growth_user)
    change = client.get(reverse("admin:campaigns_campaign_change", args=[row.pk])).content.decode()
    assert "deletelink" not in change
    assert client.post(reverse("admin:campaigns_campaign_delete", args=[row.pk]), {"post": "yes"}).status_code == 403
    client.post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
        follow=True,
    )
    assert Campaign.objects.filter(pk=row.pk).exists()
