"""Who a campaign decided for (``Recipient``), what it sends them (``Delivery``, the outbox),
and the send policy's state (``ChannelPolicy``, ``CapSlot``).

State machine of a delivery::

    suppressed                      (terminal: capped, no_consent, control, holdout, …)
    held ──(window opens)──► pending ──claim──► sending ──► sent     (terminal)
                               ▲                   │  └───► failed   (terminal: permanent error,
                               └─transient error───┘                  or tries exhausted)
                               └─lease expired / worker restarted (in doubt: resent with the same key)

The unique key (campaign, customer, step, channel) makes every producer idempotent; the
conditional claim (``status = 'pending'`` → ``'sending'``) makes every consumer idempotent.
"""

from __future__ import annotations

import hashlib

from django.db import models
from django.db.models import Q
from django.utils import timezone

from segments.models import Channel, Customer, Layer, Membership

# The rows a campaign writes per customer (recipients, deliveries, cap slots, coupons)
# reference their campaign, customer, treatment, offer, layer and membership without a
# database foreign-key constraint (``db_constraint=False``), as experiments' assignments do.
# PostgreSQL checks each constrained row with a trigger at commit that locks the parent row
# FOR KEY SHARE: about a dozen checks per message, and every decide transaction takes a
# share lock on the same campaign row. In a whole-machine profile (perf) of the delivery
# benchmark those checks were 4.7% of all CPU, 15% of the database's. The ids written come
# from rows the decide step read in the same transaction; Django's ``on_delete`` still
# cascades, protects or nulls when a customer, campaign, offer, treatment, layer or membership
# is deleted through the ORM. The cost: a customer deleted while a batch that includes them
# is being decided can leave rows that point at no customer (the ORM's cascade ran before
# they existed); queries that join them to their customer skip them.


class Recipient(models.Model):
    """A campaign's decision for one customer and step, recorded for everyone assigned
    (intent to treat): treated, control and holdout customers alike."""

    class Outcome(models.TextChoices):
        TREATED = "treated", "Treated"
        CONTROL = "control", "Control (would have sent)"
        HOLDOUT = "holdout", "Holdout (would have sent)"
        EXCLUDED = "excluded", "Excluded"

    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="recipients", db_constraint=False
    )
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    step = models.CharField(max_length=64, help_text="'broadcast', 'trigger', 'entry:<id>', 'referral:<id>:<role>'.")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.CharField(max_length=32, blank=True, help_text="The assignment reason, or why excluded.")
    variant_key = models.CharField(max_length=64, blank=True)
    assignment_id = models.BigIntegerField(null=True, blank=True)
    layer = models.ForeignKey(
        Layer, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    treatment = models.ForeignKey(
        "campaigns.Treatment", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    offer = models.ForeignKey(
        "campaigns.Offer", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    membership = models.ForeignKey(
        Membership,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        help_text="Renewal: the membership term the offer is for.",
    )
    window_key = models.CharField(max_length=64, blank=True, help_text="Renewal: the expiry-window layer key.")
    decided_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "customer", "step"], name="recipient_unique_step"),
            # At most one renewal offer per customer per membership term and window, across campaigns.
            models.UniqueConstraint(
                fields=["membership", "window_key"],
                condition=Q(membership__isnull=False),
                name="recipient_one_renewal_per_term_window",
            ),
        ]
        indexes = [models.Index(fields=["customer", "campaign"], name="recipient_customer_idx")]

    def __str__(self) -> str:
        return f"{self.campaign_id}:{self.customer_id}:{self.step} {self.outcome}"


def delivery_key(campaign_id: int, customer_id: int, step: str, channel: str) -> str:
    """The delivery's idempotency key: stable for (campaign, customer, step, channel), sent as
    the email Message-ID / X-Delivery-Key and the HTTP providers' Idempotency-Key."""
    digest = hashlib.sha256(f"{campaign_id}|{customer_id}|{step}|{channel}".encode()).hexdigest()[:32]
    return f"d{campaign_id}-{digest}"


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        HELD = "held", "Held (quiet hours)"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SUPPRESSED = "suppressed", "Suppressed"

    class Reason(models.TextChoices):
        CAPPED = "capped", "Frequency cap reached"
        QUIET_HOURS = "quiet_hours", "Held for quiet hours"
        NO_CONSENT = "no_consent", "No consent or opted out"
        SUPPRESSED = "suppressed", "Contact point suppressed (bounce, complaint, invalid)"
        NO_CONTACT = "no_contact", "No contact point for the channel"
        CONTROL = "control", "Control group (would have sent)"
        HOLDOUT = "holdout", "Holdout (would have sent)"
        NO_CONTENT = "no_content", "No content for this channel"
        NO_COUPON = "no_coupon", "Coupon pool exhausted"
        CAMPAIGN_ENDED = "campaign_ended", "Campaign finished before sending"
        PERMANENT_ERROR = "permanent_error", "Provider refused the message"
        GAVE_UP = "gave_up", "Gave up after the last try"
        RENDER_ERROR = "render_error", "Content failed to render"

    SUPPRESSION_REASONS = (
        Reason.CAPPED,
        Reason.NO_CONSENT,
        Reason.SUPPRESSED,
        Reason.NO_CONTACT,
        Reason.CONTROL,
        Reason.HOLDOUT,
        Reason.NO_CONTENT,
        Reason.NO_COUPON,
        Reason.CAMPAIGN_ENDED,
    )

    recipient = models.ForeignKey(
        Recipient, on_delete=models.CASCADE, related_name="deliveries", db_index=False, db_constraint=False
    )
    # No index of its own: delivery_unique and delivery_campaign_status_idx lead with it, and
    # every index costs each of a message's four writes (insert, enqueue, claim, mark).
    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="deliveries", db_index=False, db_constraint=False
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    step = models.CharField(max_length=64)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    key = models.CharField(max_length=64, unique=True, help_text="Idempotency key sent to the provider.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=32, choices=Reason.choices, blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="Quiet hours or retry backoff.")
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=5)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The first claim's time: a deferred message is retried for its channel's retry period
    # from here (campaigns.conf, CAMPAIGNS_RETRY_PERIOD_<CHANNEL>).
    first_tried_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    provider_ref = models.CharField(max_length=200, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["campaign", "customer", "step", "channel"], name="delivery_unique"),
            models.CheckConstraint(
                condition=~Q(status__in=["failed", "suppressed", "held"]) | ~Q(reason=""),
                name="delivery_terminal_has_reason",
            ),
        ]
        indexes = [
            models.Index(fields=["campaign", "status"], name="delivery_campaign_status_idx"),
            models.Index(fields=["customer", "channel"], name="delivery_customer_idx"),
            # The sweeper's scan: only rows still in flight.
            models.Index(
                fields=["status", "not_before"],
                name="delivery_open_idx",
                condition=Q(status__in=["pending", "held", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} {self.channel} {self.status}"


class ChannelPolicy(models.Model):
    """The send policy of one channel, applied to every campaign: frequency caps per customer
    (per local day and per local week, in the customer's timezone), quiet hours (local time),
    and a rate limit shared by every worker."""

    channel = models.CharField(max_length=16, choices=Channel.choices, unique=True)
    daily_cap = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Messages per customer per local day."
    )
    weekly_cap = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Messages per customer per local ISO week."
    )
    quiet_start = models.TimeField(null=True, blank=True, help_text="Local time quiet hours begin, e.g. 21:00.")
    quiet_end = models.TimeField(null=True, blank=True, help_text="Local time quiet hours end, e.g. 08:00.")
    rate_per_second = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most messages per second across all workers."
    )

    class Meta:
        verbose_name_plural = "channel policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(quiet_start__isnull=True, quiet_end__isnull=True)
                | Q(quiet_start__isnull=False, quiet_end__isnull=False),
                name="channel_policy_quiet_both_or_none",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} policy"


class CapSlot(models.Model):
    """One message counted against a frequency cap. A customer may hold slots 1..cap for a
    channel and local period; the unique key makes concurrent senders race for a slot in the
    database instead of reading a count and writing after it."""

    class Period(models.TextChoices):
        DAY = "day", "Local day"
        WEEK = "week", "Local ISO week (Monday)"

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    period = models.CharField(max_length=8, choices=Period.choices)
    period_start = models.DateField()
    slot = models.PositiveSmallIntegerField()
    # Which message took the slot (for the audit); no database constraint, so slots can be
    # taken in the same statement batch as the deliveries are written, in any order.
    delivery = models.ForeignKey(
        Delivery, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "channel", "period", "period_start", "slot"], name="cap_slot_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}:{self.channel}:{self.period}:{self.period_start}#{self.slot}"


class AudienceBatch(models.Model):
    """A range of customer ids of a broadcast's audience, decided by one task. Created in one
    transaction when the campaign starts; the sweeper re-enqueues batches left undone."""

    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.CASCADE, related_name="audience_batches")
    first_customer_id = models.BigIntegerField()
    last_customer_id = models.BigIntegerField()
    enqueued_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    decided = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "audience batches"
        constraints = [
            models.UniqueConstraint(fields=["campaign", "first_customer_id"], name="audience_batch_unique"),
        ]
        indexes = [
            models.Index(fields=["campaign"], name="audience_batch_open_idx", condition=Q(done_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}:[{self.first_customer_id}..{self.last_customer_id}]"
