"""Status transitions are explicit services that check what they allow."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns.models import Campaign, Content
from campaigns.services import lifecycle
from tests.campaigns.builders import campaign, customers

pytestmark = pytest.mark.django_db


def test_transitions__allowed_path__draft_scheduled_running_paused_finished(no_caps: None) -> None:
    customers(1)  # a broadcast to nobody is refused at launch
    row = campaign()
    with pytest.raises(ValidationError) as info:
        lifecycle.campaign_schedule(campaign=row)
    assert "send_at" in info.value.message_dict
    row = lifecycle.campaign_schedule(campaign=row, send_at=timezone.now() + dt.timedelta(hours=1))
    assert row.status == "scheduled"
    assert lifecycle.campaign_launch(campaign=row).status == "running"
    assert lifecycle.campaign_pause(campaign=row).status == "paused"
    assert lifecycle.campaign_resume(campaign=row).status == "running"
    assert lifecycle.campaign_finish(campaign=row).status == "finished"
    for action in ("schedule", "launch", "pause", "resume", "finish"):
        with pytest.raises(lifecycle.TransitionError) as refused:
            getattr(lifecycle, f"campaign_{action}")(campaign=row)
        assert "finished" in refused.value.message_dict["status"][0]


def test_campaign_validate__incomplete_campaigns__errors_named_by_field() -> None:
    empty = Campaign.objects.create(key="empty", name="Empty", channels=[])
    with pytest.raises(ValidationError) as info:
        lifecycle.campaign_launch(campaign=empty)
    assert {"channels", "treatments"} <= set(info.value.message_dict)
    renewal = campaign(key="renewal", kind="renewal", channels=("email", "sms"))
    Content.objects.filter(treatment__campaign=renewal, channel="sms").delete()
    Content.objects.filter(treatment__campaign=renewal).update(subject="{{ customer.nickname }}")
    with pytest.raises(ValidationError) as info:
        lifecycle.campaign_validate(campaign=renewal)
    errors = info.value.message_dict
    assert "split_dimension" in errors
    assert any(key.endswith(".email.subject") for key in errors)
    assert any("No treatment has sms content" in message for message in errors["channels"])
    assert Campaign.objects.get(pk=renewal.pk).status == "draft"
