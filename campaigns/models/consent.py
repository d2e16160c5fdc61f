"""What a customer said about the messages they receive, beyond the channel consent kept on
``segments.Customer``: per-topic opt-outs (``TopicOptOut``) and contact points that must
never be written to again (``Suppression``: hard bounces, spam complaints, invalid numbers).

Both are read at send time, for a whole claimed chunk in the one query that reads it
(``campaigns.services.delivery``), so a change takes effect for messages already queued.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from segments.models import Channel, Customer


class Topic(models.TextChoices):
    """What a marketing campaign is about; customers opt out per topic and channel."""

    PROMOTIONS = "promotions", "Promotions and offers"
    RENEWALS = "renewals", "Membership renewals"
    REFERRALS = "referrals", "Referral rewards"
    RECALL = "recall", "We miss you (win-back)"
    NEWS = "news", "News and updates"


class TopicOptOut(models.Model):
    """The customer's choice for one (channel, topic): opted out or subscribed again, and when."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    topic = models.CharField(max_length=32, choices=Topic.choices)
    opted_out = models.BooleanField(default=True)
    changed_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=32, blank=True, help_text="preferences, one_click, admin, …")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "channel", "topic"], name="topic_opt_out_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.channel}/{self.topic} {'out' if self.opted_out else 'in'}"


class Suppression(models.Model):
    """A contact point (normalized email address or E.164 phone number) never written to
    again, whoever it belongs to, with why and since when."""

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce", "Hard bounce"
        COMPLAINT = "complaint", "Spam complaint"
        INVALID = "invalid", "Invalid address or number"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed at the provider"
        MANUAL = "manual", "Added by hand"

    channel = models.CharField(max_length=16, choices=[(Channel.EMAIL, "Email"), (Channel.SMS, "SMS")])
    address = models.CharField(max_length=254, help_text="Lower-case email address, or E.164 phone number.")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    detail = models.TextField(blank=True, help_text="The provider's or server's words.")
    source = models.CharField(max_length=64, blank=True, help_text="smtp, webhook:<esp>, import, admin, sms_inbound")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["channel", "address"], name="suppression_unique_address")]

    def __str__(self) -> str:
        return f"{self.channel}:{self.address} ({self.reason})"
