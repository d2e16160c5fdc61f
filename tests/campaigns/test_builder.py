"""The guided campaign builder in the admin: create with its own experiment, fill the
variant × layer grid, live audience JSON, preview, checklist and launch."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from campaigns.models import Campaign, Content, Offer, Treatment
from campaigns.services import assignments
from segments.models import CustomerLayer, Dimension, Segment
from tests.campaigns.builders import customers

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _start(client: Client, **overrides: Any) -> Any:
    data = {
        "key": "spring",
        "name": "Spring",
        "kind": "custom",
        "channels": ["email"],
        "trigger": "broadcast",
        "with_experiment": "on",
        "control_percent": "50",
        "variant_keys": "offer",
        "metric": "order",
        **overrides,
    }
    return client.post(reverse("admin:campaigns_campaign_builder"), data)


def _expiry_audience() -> tuple[Dimension, Any, Any]:
    """30 customers expiring soon, 10 expired recently."""
    dimension = Dimension.objects.get(key="expiry")
    soon, lapsed = dimension.layers.get(key="expiring_soon"), dimension.layers.get(key="expired_recently")
    for layer, prefix, n in ((soon, "s", 30), (lapsed, "l", 10)):
        CustomerLayer.objects.bulk_create(
            [CustomerLayer(customer=c, dimension=dimension, layer=layer) for c in customers(n, prefix=prefix)]
        )
    return dimension, soon, lapsed


def test_builder_start__valid__draft_campaign_with_its_own_experiment(growth_user) -> None:  # type: ignore[no-untyped-def]
    client = _client(growth_user)
    response = _start(client, control_percent="20", variant_keys="offer_a, offer_b")
    row = Campaign.objects.get(key="spring")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:campaigns_campaign_builder_edit", args=[row.pk])
    weights = dict(row.experiment.variants.values_list("key", "weight"))
    assert {k: str(w.normalize()) for k, w in weights.items()} == {"control": "0.2", "offer_a": "0.4", "offer_b": "0.4"}
    assert row.experiment.managed_by == assignments.manager_tag(row.pk)
    assert row.status == Campaign.Status.DRAFT and row.channels == ["email"]


def test_builder_start__unknown_metric_or_bad_key__errors_shown_nothing_created(growth_user) -> None:  # type: ignore[no-untyped-def]
    response = _start(_client(growth_user), key="not a slug")
    assert response.status_code == 200 and b"errorlist" in response.content
    assert not Campaign.objects.exists()


def test_builder_start__segment_never_computed__computed_on_save(growth_user) -> None:  # type: ignore[no-untyped-def]
    people = customers(3)
    segment = Segment.objects.create(key="utc", name="UTC", rule={"field": "timezone", "op": "eq", "value": "UTC"})
    _start(_client(growth_user), include_segments=[segment.pk])
    segment.refresh_from_db()
    assert segment.computed_at is not None and segment.memberships.count() == len(people)


def test_builder_grid__filled_and_empty_cells__treatments_only_for_filled_ones(growth_user) -> None:  # type: ignore[no-untyped-def]
    dimension, soon, lapsed = _expiry_audience()
    client = _client(growth_user)
    _start(client, split_dimension=dimension.pk, include_layers=[soon.pk, lapsed.pk])
    row = Campaign.objects.get(key="spring")
    offer = Offer.objects.create(key="ten", name="Ten", benefit_kind="percent_off", value=10, validity_days=7)
    url = reverse("admin:campaigns_campaign_builder_edit", args=[row.pk])
    page = client.get(url)
    assert f'id="cell-t-offer-{soon.pk}"' in page.content.decode()
    response = client.post(
        url,
        {
            f"t-offer-{soon.pk}-offer": offer.pk,
            f"t-offer-{soon.pk}-email_subject": "Renew, {{ customer.external_id }}",
            f"t-offer-{soon.pk}-email_text": "{{ offer.benefit }} with {{ coupon.code }}",
        },
    )
    assert response.status_code == 302
    treatment = Treatment.objects.get(campaign=row)
    assert (treatment.variant_key, treatment.layer_id, treatment.offer_id) == ("offer", soon.pk, offer.pk)
    assert Content.objects.get(treatment=treatment).subject == "Renew, {{ customer.external_id }}"
    # The checklist names the layer the variant misses, and the audience JSON says who is split.
    page = client.get(url).content.decode()
    assert "has no treatment for layer(s) Expired within the last 3 months" in page
    sizes = client.get(reverse("admin:campaigns_campaign_builder_audience", args=[row.pk])).json()
    assert sizes["total"] == 40 and sizes["split"] == 30
    by_layer = {layer["layer_id"]: (layer["size"], layer["split"]) for layer in sizes["layers"]}
    assert by_layer[soon.pk] == (30, True) and by_layer[lapsed.pk] == (10, False)
    assert {v["key"]: v["expected"] for v in sizes["variants"]} == {"control": 15, "offer": 15}


def test_builder_grid__content_with_unknown_variable__error_in_its_cell_nothing_saved(growth_user) -> None:  # type: ignore[no-untyped-def]
    client = _client(growth_user)
    _start(client)
    row = Campaign.objects.get(key="spring")
    url = reverse("admin:campaigns_campaign_builder_edit", args=[row.pk])
    response = client.post(url, {"t-offer-any-email_subject": "Hi", "t-offer-any-email_text": "{{ coupon.code }}"})
    assert response.status_code == 200 and b"Not saved" in response.content
    assert not Treatment.objects.filter(campaign=row).exists()


def test_builder_launch__channel_without_content__refused_with_message_then_launched(growth_user, no_caps) -> None:  # type: ignore[no-untyped-def]
    customers(4)
    client = _client(growth_user)
    _start(client)
    row = Campaign.objects.get(key="spring")
    edit = reverse("admin:campaigns_campaign_builder_edit", args=[row.pk])
    launch = reverse("admin:campaigns_campaign_builder_launch", args=[row.pk])
    client.post(
        edit,
        {
            "t-offer-any-offer": Offer.objects.create(
                key="ten", name="Ten", benefit_kind="percent_off", value=10, validity_days=7
            ).pk
        },
    )
    response = client.post(launch, follow=True)
    assert (
        "Launch refused" in response.content.decode() and "No treatment has email content" in response.content.decode()
    )
    row.refresh_from_db()
    row.experiment.refresh_from_db()
    assert row.status == Campaign.Status.DRAFT and row.experiment.status == "draft"
    client.post(
        edit,
        {
            "t-offer-any-offer": Offer.objects.get().pk,
            "t-offer-any-email_subject": "Hi",
            "t-offer-any-email_text": "{{ offer.benefit }}",
        },
    )
    assert b"Ready to launch" in client.get(edit).content
    client.post(launch)
    row.refresh_from_db()
    row.experiment.refresh_from_db()
    assert row.status == Campaign.Status.RUNNING and row.experiment.status == "running"


def test_builder_preview__sample_customer__rendered_per_channel(growth_user) -> None:  # type: ignore[no-untyped-def]
    customers(2)
    client = _client(growth_user)
    _start(client)
    row = Campaign.objects.get(key="spring")
    edit = reverse("admin:campaigns_campaign_builder_edit", args=[row.pk])
    client.post(edit, {"t-offer-any-email_subject": "Hi {{ customer.external_id }}", "t-offer-any-email_text": "x"})
    page = client.get(edit, {"customer": "c000001"}).content.decode()
    assert "Hi c000001" in page


def test_campaign_changelist__growth_user__links_to_the_builder(growth_user) -> None:  # type: ignore[no-untyped-def]
    page = _client(growth_user).get(reverse("admin:campaigns_campaign_changelist")).content.decode()
    assert reverse("admin:campaigns_campaign_builder") in page and "New campaign with the builder" in page


def test_builder__marketer__sees_but_cannot_create_or_launch(marketer_user, growth_user) -> None:  # type: ignore[no-untyped-def]
    _start(_client(growth_user))
    row = Campaign.objects.get(key="spring")
    client = _client(marketer_user)
    assert client.get(reverse("admin:campaigns_campaign_builder")).status_code == 403
    assert client.get(reverse("admin:campaigns_campaign_builder_edit", args=[row.pk])).status_code == 200
    assert client.post(reverse("admin:campaigns_campaign_builder_launch", args=[row.pk])).status_code == 403
    assert client.post(reverse("admin:campaigns_campaign_builder_edit", args=[row.pk]), {}).status_code == 403


def test_builder_launch__duplicate_of_a_built_campaign__its_own_experiment_started(growth_user, no_caps) -> None:  # type: ignore[no-untyped-def]
    customers(2)
    client = _client(growth_user)
    _start(client)
    row = Campaign.objects.get(key="spring")
    client.post(
        reverse("admin:campaigns_campaign_builder_edit", args=[row.pk]),
        {"t-offer-any-email_subject": "Hi", "t-offer-any-email_text": "Hello"},
    )
    client.post(reverse("admin:campaigns_campaign_duplicate", args=[row.pk]))
    copy = Campaign.objects.get(key="spring-copy")
    assert copy.experiment.managed_by == assignments.manager_tag(copy.pk)
    client.post(reverse("admin:campaigns_campaign_builder_launch", args=[copy.pk]))
    copy.refresh_from_db()
    copy.experiment.refresh_from_db()
    assert copy.status == Campaign.Status.RUNNING and copy.experiment.status == "running"
