"""Symmetric exposure: a customer is assigned, exposed and analysed only where every variant
would act on them, and launching with a treated variant missing a layer is refused."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from campaigns.models import AudienceBatch, Campaign, Delivery, Recipient, Treatment
from campaigns.services import lifecycle
from campaigns.services.decide import Target, recipients_decide
from experiments.models import Assignment
from segments.models import CustomerLayer, Dimension
from tests.campaigns.builders import campaign, customers
from tests.campaigns.test_decide import _experiment

pytestmark = pytest.mark.django_db


def _split_campaign(key: str = "sym", **fields):  # type: ignore[no-untyped-def]
    """200 customers in 'expiring soon', 200 in 'expired recently'; the 'offer' variant has a
    treatment only for 'expiring soon' (the measured asymmetric set-up)."""
    dimension = Dimension.objects.get(key="expiry")
    soon, lapsed = dimension.layers.get(key="expiring_soon"), dimension.layers.get(key="expired_recently")
    for layer, prefix in ((soon, "s"), (lapsed, "l")):
        CustomerLayer.objects.bulk_create(
            [CustomerLayer(customer=c, dimension=dimension, layer=layer) for c in customers(200, prefix=prefix)]
        )
    experiment = _experiment(f"{key}-x")
    row = campaign(
        key=key,
        experiment=experiment,
        split_dimension=dimension,
        treatment={"variant_key": "offer", "layer": soon},
        **fields,
    )
    row.include_layers.set([soon, lapsed])
    return row, soon, lapsed


def _exposed_by_variant_and_layer(row: Campaign) -> dict[tuple[str, str], int]:
    exposed = Assignment.objects.filter(experiment=row.experiment, first_exposed_at__isnull=False)
    layer_of = dict(CustomerLayer.objects.values_list("customer_id", "layer__key"))
    counts: dict[tuple[str, str], int] = {}
    for customer_id, variant in exposed.values_list("customer_id", "variant__key"):
        key = (variant, layer_of.get(customer_id, ""))
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_campaign_launch__variant_without_treatment_for_a_layer__refused_until_fallback(no_caps: None) -> None:
    row, _, lapsed = _split_campaign()
    with pytest.raises(ValidationError) as caught:
        lifecycle.campaign_launch(campaign=row)
    message = " ".join(caught.value.message_dict["treatments"])
    assert "Variant 'offer'" in message and lapsed.name in message and "any layer" in message
    row.refresh_from_db()
    assert row.status == Campaign.Status.DRAFT
    # An explicit fallback ("any layer" treatment of the variant) makes it launchable.
    fallback = Treatment.objects.create(campaign=row, variant_key="offer", offer=row.treatments.first().offer)
    fallback.contents.create(channel="email", subject="Hi", text="{{ offer.benefit }} {{ coupon.code }}")
    assert lifecycle.campaign_launch(campaign=row).status == Campaign.Status.RUNNING


def test_broadcast__treated_variant_misses_a_layer__nobody_there_assigned_or_exposed(no_caps: None) -> None:
    # Given a running broadcast whose 'offer' variant acts only on 'expiring soon' (the launch
    # check is bypassed: a layer can also be added to the dimension after launch)
    row, soon, lapsed = _split_campaign()
    Campaign.objects.filter(pk=row.pk).update(status=Campaign.Status.RUNNING)
    # When the audience is resolved and decided
    lifecycle.campaign_audience_resolve(campaign_id=row.pk)
    for batch_id in AudienceBatch.objects.filter(campaign=row).values_list("pk", flat=True):
        lifecycle.audience_batch_decide(batch_id=batch_id)
    # Then control and offer are exposed only in 'expiring soon', in comparable numbers
    counts = _exposed_by_variant_and_layer(row)
    assert counts.get(("control", lapsed.key), 0) == 0
    assert counts.get(("offer", lapsed.key), 0) == 0
    assert counts[("control", soon.key)] > 60 and counts[("offer", soon.key)] > 60
    # nobody in 'expired recently' is even assigned, and each is recorded as excluded
    assert not Assignment.objects.filter(experiment=row.experiment, customer__external_id__startswith="l").exists()
    lapsed_rows = Recipient.objects.filter(campaign=row, layer=lapsed)
    assert set(lapsed_rows.values_list("outcome", "reason").distinct()) == {("excluded", "no_treatment")}
    # and no "would have sent" control row stands for a layer no treatment reaches
    assert not Delivery.objects.filter(campaign=row, reason="control", recipient__layer=lapsed).exists()


def test_recipients_decide__triggered_customer_in_uncovered_layer__not_assigned(no_caps: None) -> None:
    row, _, lapsed = _split_campaign(key="trig")
    Campaign.objects.filter(pk=row.pk).update(status=Campaign.Status.RUNNING)
    row.refresh_from_db()
    first_lapsed = CustomerLayer.objects.filter(layer=lapsed).order_by("pk").values_list("customer_id", flat=True)[:20]
    recipients_decide(campaign=row, targets=[Target(cid, "trigger") for cid in first_lapsed])
    assert not Assignment.objects.filter(experiment=row.experiment).exists()
    assert set(Recipient.objects.filter(campaign=row).values_list("outcome", flat=True)) == {"excluded"}


def test_assignments_api__customer_outside_running_campaign_audience__not_assigned_campaign_managed(
    no_caps: None, api_client_factory
) -> None:  # type: ignore[no-untyped-def]
    # Given a launched broadcast split by an experiment, and a customer outside its audience
    row, soon, _ = _split_campaign(key="owned")
    row.include_layers.set([soon])
    lifecycle.campaign_launch(campaign=row)
    lifecycle.campaign_audience_resolve(campaign_id=row.pk)
    for batch_id in AudienceBatch.objects.filter(campaign=row).values_list("pk", flat=True):
        lifecycle.audience_batch_decide(batch_id=batch_id)
    outsider = CustomerLayer.objects.exclude(layer=soon).values_list("customer__external_id", flat=True).first()
    insider = Recipient.objects.filter(campaign=row, outcome="treated").select_related("customer").first()
    exposures_before = Assignment.objects.get(experiment=row.experiment, customer=insider.customer).exposure_count
    reader = api_client_factory("offers:read")
    # When an app asks the generic assignment API about both
    outside = reader.get(f"/api/v1/customers/{outsider}/assignments").json()["results"]
    inside = reader.get(f"/api/v1/customers/{insider.customer.external_id}/assignments").json()["results"]
    # Then the outsider is not assigned (the campaign owns its experiment) and says why
    assert [(r["experiment"], r["reason"], r["variant"]) for r in outside] == [
        (row.experiment.key, "campaign_managed", None)
    ]
    assert not Assignment.objects.filter(experiment=row.experiment, customer__external_id=outsider).exists()
    # and the insider gets the campaign's actual decision, with no exposure added
    assert [(r["variant"], r["reason"]) for r in inside] == [(insider.variant_key, "assigned")]
    assert (
        Assignment.objects.get(experiment=row.experiment, customer=insider.customer).exposure_count == exposures_before
    )
