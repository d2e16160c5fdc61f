"""Channels and the customer fields that reach them: shared vocabulary for the apps that
message customers (campaigns imports it from here, not from ``segments.models``)."""

from __future__ import annotations

from django.db import models


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    PUSH = "push", "Push"
    IN_APP = "in_app", "In-app"


# The contact field and its consent/opt-out timestamps, per channel. In-app messages
# are read through the offer API by a signed-in customer and need no contact point.
CONTACT_FIELDS: dict[str, tuple[str, str, str]] = {
    Channel.EMAIL: ("email", "email_consent_at", "email_opt_out_at"),
    Channel.SMS: ("phone", "sms_consent_at", "sms_opt_out_at"),
    Channel.PUSH: ("push_token", "push_consent_at", "push_opt_out_at"),
}
