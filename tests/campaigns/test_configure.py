"""The one door for configuring a campaign: ``campaigns.services.configure`` (campaign_create
with its own experiment, treatment_set, content_set, offer_create), and the admin form that
only collects and shows the service's errors."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from campaigns.models import Campaign, Content, Offer, Topic, Treatment
from campaigns.services import assignments, configure, lifecycle
from experiments import services as experiment_services
from segments.models import Dimension
from tests.campaigns.builders import campaign, customers

pytestmark = pytest.mark.django_db


def _variants() -> list[experiment_services.VariantSpec]:
    return [
        experiment_services.VariantSpec(key="control", name="Control", weight=Decimal("0.5"), is_control=True),
        experiment_services.VariantSpec(key="offer", name="Offer", weight=Decimal("0.5")),
    ]


def test_campaign_create__new_user_kind__signup_trigger_within_48h_and_promotions_topic() -> None:
    row = configure.campaign_create(
        key="welcome", name="Welcome", kind=Campaign.Kind.NEW_USER, config={"channels": ["email"]}
    )
    row.refresh_from_db()
    assert (row.trigger, row.trigger_event_type.code, row.trigger_within_hours) == ("event", "signup", 48)
    assert row.topic == Topic.PROMOTIONS and row.status == Campaign.Status.DRAFT


def test_campaign_create__winback_kind__recall_topic_and_audience_set() -> None:
    expiry = Dimension.objects.get(key="expiry")
    layer = expiry.layers.first()
    row = configure.campaign_create(
        key="back",
        name="Back",
        kind=Campaign.Kind.WINBACK,
        config={"channels": ["email"], "split_dimension": expiry, "include_layers": [layer.pk]},
    )
    assert row.topic == Topic.RECALL
    assert list(row.include_layers.values_list("pk", flat=True)) == [layer.pk]


def test_campaign_create__unknown_or_repeated_channel__error_on_channels() -> None:
    for channels in (["email", "fax"], ["email", "email"]):
        with pytest.raises(ValidationError) as caught:
            configure.campaign_create(key="c", name="C", config={"channels": channels})
        assert "channels" in caught.value.message_dict
    assert not Campaign.objects.exists()


def test_campaign_create__own_experiment__draft_experiment_claimed_by_the_campaign() -> None:
    row = configure.campaign_create(
        key="spring",
        name="Spring",
        config={"channels": ["email"]},
        own_experiment=configure.OwnExperiment(variants=_variants(), metric="order"),
    )
    experiment = row.experiment
    experiment.refresh_from_db()
    assert experiment.key == "spring" and experiment.status == "draft"
    assert experiment.managed_by == assignments.manager_tag(row.pk)
    assert sorted(experiment.variants.values_list("key", flat=True)) == ["control", "offer"]
    # Nobody else can take it.
    other = configure.campaign_create(key="other", name="Other", config={"channels": ["sms"], "experiment": experiment})
    with pytest.raises(ValidationError):
        assignments.experiment_claim(experiment=experiment, campaign_id=other.pk)


def test_campaign_create__own_experiment_with_bad_weights__nothing_created() -> None:
    bad = [
        experiment_services.VariantSpec(key="control", name="Control", weight=Decimal("0.5"), is_control=True),
        experiment_services.VariantSpec(key="offer", name="Offer", weight=Decimal("0.7")),
    ]
    with pytest.raises(ValidationError):
        configure.campaign_create(
            key="bad", name="Bad", own_experiment=configure.OwnExperiment(variants=bad, metric="order")
        )
    assert not Campaign.objects.filter(key="bad").exists()


def test_treatment_set__blank_row__refused_unless_explicit_fallback() -> None:
    row = configure.campaign_create(key="c", name="C", config={"channels": ["email"]})
    with pytest.raises(ValidationError) as caught:
        configure.treatment_set(campaign=row)
    assert "blank" in caught.value.message_dict["treatments"][0]
    assert not Treatment.objects.filter(campaign=row).exists()
    fallback = configure.treatment_set(campaign=row, fallback=True)
    assert (fallback.variant_key, fallback.layer_id, fallback.offer_id) == ("", None, None)


def test_treatment_set__same_variant_and_layer_twice__one_row_updated() -> None:
    row = configure.campaign_create(key="c", name="C", config={"channels": ["email"]})
    first = configure.treatment_set(campaign=row, variant_key="offer")
    offer = configure.offer_create(key="ten", name="Ten", benefit_kind="percent_off", value=10, validity_days=7)
    second = configure.treatment_set(campaign=row, variant_key="offer", offer=offer)
    assert first.pk == second.pk and Treatment.objects.get(pk=first.pk).offer_id == offer.pk


def test_treatment_set__layer_outside_split_dimension__error_on_layer() -> None:
    row = configure.campaign_create(key="c", name="C", config={"channels": ["email"]})
    layer = Dimension.objects.get(key="expiry").layers.first()
    with pytest.raises(ValidationError) as caught:
        configure.treatment_set(campaign=row, variant_key="offer", layer=layer)
    assert "layer" in caught.value.message_dict


def test_content_set__unknown_variable__error_names_the_field_and_nothing_saved() -> None:
    row = configure.campaign_create(key="c", name="C", config={"channels": ["email"]})
    treatment = configure.treatment_set(campaign=row, fallback=True)
    with pytest.raises(ValidationError) as caught:
        configure.content_set(treatment=treatment, channel="email", subject="Hi", text="{{ coupon.code }}")
    assert "text" in caught.value.message_dict
    assert not Content.objects.exists()
    configure.content_set(treatment=treatment, channel="email", subject="Hi", text="Hello")
    configure.content_set(treatment=treatment, channel="email", subject="Hi again", text="Hello")
    assert list(Content.objects.values_list("subject", flat=True)) == ["Hi again"]


def test_treatment_and_content_set__running_campaign__refused(no_caps: None) -> None:
    customers(2)
    row = campaign(key="live")
    lifecycle.campaign_launch(campaign=row)
    treatment = row.treatments.get()
    with pytest.raises(ValidationError):
        configure.treatment_set(campaign=row, variant_key="other", fallback=True)
    with pytest.raises(ValidationError):
        configure.content_set(treatment=treatment, channel="email", subject="Changed", text="x")


def test_offer_create__percent_over_100__refused_and_nothing_saved() -> None:
    with pytest.raises(ValidationError):
        configure.offer_create(key="o", name="O", benefit_kind="percent_off", value=150, validity_days=7)
    with pytest.raises(ValidationError) as caught:
        configure.offer_create(key="o", name="O", benefit_kind="percent_off", value=10, colour="red")
    assert "colour" in caught.value.message_dict
    assert not Offer.objects.exists()
