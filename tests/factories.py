"""factory_boy factories shared by the whole suite."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from segments.models import Customer, CustomerTag, Event, EventType, Membership, Tag


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery-staple")

    @factory.post_generation
    def groups(self, create: bool, extracted: list[str] | None, **kwargs: object) -> None:
        if create and extracted:
            self.groups.set([Group.objects.get(name=name) for name in extracted])
        if create:
            self.save()


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    external_id = factory.Sequence(lambda n: f"cust-{n:07d}")
    signed_up_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(days=30))
    timezone = "UTC"
    locale = "en"
    email = factory.LazyAttribute(lambda c: f"{c.external_id}@example.com")
    email_consent_at = factory.LazyAttribute(lambda c: c.signed_up_at)


def event_type(code: str) -> EventType:
    return EventType.objects.get(code=code)


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    event_id = factory.Sequence(lambda n: f"evt-{n:09d}")
    customer = factory.SubFactory(CustomerFactory)
    event_type = factory.LazyFunction(lambda: event_type("login"))
    occurred_at = factory.LazyFunction(timezone.now)


class OrderFactory(EventFactory):
    event_type = factory.LazyFunction(lambda: event_type("order"))
    amount = Decimal("42.00")
    currency = "EUR"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    customer = factory.SubFactory(CustomerFactory)
    plan = "plus"
    level = ""
    started_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(days=300))
    expires_at = factory.LazyAttribute(lambda m: m.started_at + dt.timedelta(days=365))


class TagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tag

    code = factory.Sequence(lambda n: f"T{n}")
    name = factory.Sequence(lambda n: f"Tag {n}")
    family = Tag.Family.BEHAVIOUR


class CustomerTagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CustomerTag

    customer = factory.SubFactory(CustomerFactory)
    tag = factory.SubFactory(TagFactory)


# --- campaigns ---------------------------------------------------------------------------


class OfferFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Offer"

    key = factory.Sequence(lambda n: f"offer-{n}")
    name = factory.Sequence(lambda n: f"Offer {n}")
    benefit_kind = "percent_off"
    value = Decimal("10")
    validity_days = 14


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Campaign"

    key = factory.Sequence(lambda n: f"campaign-{n}")
    name = factory.Sequence(lambda n: f"Campaign {n}")
    kind = "custom"
    channels = factory.LazyFunction(lambda: ["email"])


class TreatmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Treatment"

    campaign = factory.SubFactory(CampaignFactory)
    offer = factory.SubFactory(OfferFactory)


class ContentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Content"

    treatment = factory.SubFactory(TreatmentFactory)
    channel = "email"
    subject = "Hello {{ customer.external_id }}"
    text = "Your code {{ coupon.code }}: {{ offer.benefit }}."
