"""Campaigns, what each variant × layer receives (treatments) and the message content per channel.

A campaign targets an audience (segments and dimension layers, include/exclude), optionally
splits it with an experiment, and maps each (variant, layer) to a ``Treatment``: an offer and
one ``Content`` per channel. Status moves only through the services in
``campaigns.services.lifecycle`` (draft → scheduled → running ⇄ paused → finished).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from campaigns.models.consent import Topic
from experiments.models import Experiment
from segments.models import Channel, Dimension, EventType, Layer, Segment


class CampaignQuerySet(models.QuerySet["Campaign"]):
    def running(self) -> CampaignQuerySet:
        return self.filter(status=Campaign.Status.RUNNING)


class Campaign(models.Model):
    class Kind(models.TextChoices):
        NEW_USER = "new_user", "New-user incentive"
        REFERRAL = "referral", "Referral reward"
        RENEWAL = "renewal", "Renewal offer"
        WINBACK = "winback", "Win-back recall"
        CUSTOM = "custom", "Custom"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        FINISHED = "finished", "Finished"

    class Trigger(models.TextChoices):
        BROADCAST = "broadcast", "Broadcast at the scheduled time"
        EVENT = "event", "On an event"
        LAYER_ENTRY = "layer_entry", "On entering a layer"

    class ChannelStrategy(models.TextChoices):
        ALL = "all", "Every listed channel that reaches the customer"
        FIRST_REACHABLE = "first_reachable", "The first listed channel that reaches the customer"

    class RewardTo(models.TextChoices):
        INVITER = "inviter", "Inviter"
        INVITEE = "invitee", "Invitee"
        BOTH = "both", "Both"

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=150)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CUSTOM)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT, editable=False)

    experiment = models.ForeignKey(
        Experiment,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Splits the audience into variants; its control variant gets no message unless a "
        "treatment names it (a baseline offer). Without an experiment everyone is treated.",
    )
    include_segments = models.ManyToManyField(Segment, blank=True, related_name="+")
    exclude_segments = models.ManyToManyField(Segment, blank=True, related_name="+")
    include_layers = models.ManyToManyField(Layer, blank=True, related_name="+")
    exclude_layers = models.ManyToManyField(Layer, blank=True, related_name="+")
    split_dimension = models.ForeignKey(
        Dimension,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Treatments may differ per layer of this dimension (renewal: the expiry-window dimension).",
    )

    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.BROADCAST)
    trigger_event_type = models.ForeignKey(
        EventType,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Event trigger: the event type that fires the campaign (e.g. signup).",
    )
    trigger_layer = models.ForeignKey(
        Layer,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Layer-entry trigger: entering this layer fires the campaign.",
    )
    trigger_within_hours = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Triggered campaigns: act only on triggers at most this many hours old "
        "(new-user incentive: a starter offer within N hours of signup).",
    )
    trigger_cursor = models.BigIntegerField(
        default=0, editable=False, help_text="Id of the last event / layer-history row processed."
    )

    channels = models.JSONField(default=list, help_text='Channels in order of preference, e.g. ["email", "sms"].')
    channel_strategy = models.CharField(
        max_length=16, choices=ChannelStrategy.choices, default=ChannelStrategy.FIRST_REACHABLE
    )
    is_transactional = models.BooleanField(
        default=False,
        help_text="Transactional messages are exempt from frequency caps, quiet hours, topic opt-outs "
        "and the unsubscribe link.",
    )
    topic = models.CharField(
        max_length=32,
        choices=Topic.choices,
        default=Topic.PROMOTIONS,
        help_text="What the campaign is about: customers can opt out of a topic per channel.",
    )
    send_at = models.DateTimeField(null=True, blank=True, help_text="Broadcast: when to send.")
    ends_at = models.DateTimeField(
        null=True, blank=True, help_text="The campaign finishes then; coupons expire no later than this."
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(20)], help_text="Tries per message."
    )

    referral_reward_to = models.CharField(max_length=8, choices=RewardTo.choices, default=RewardTo.BOTH)
    referral_qualifying_event_type = models.ForeignKey(
        EventType,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Referral: the invitee's event that earns the reward (signup, order).",
    )
    referral_cap_per_inviter = models.PositiveIntegerField(
        null=True, blank=True, help_text="Referral: most rewarded referrals per inviter."
    )

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    scheduled_at = models.DateTimeField(null=True, blank=True, editable=False)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    audience_resolved_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Broadcast: when the audience was split into batches."
    )
    version = models.PositiveIntegerField(
        default=1,
        editable=False,
        help_text="Bumped by each change made once the campaign is scheduled (a new version: a new phase "
        "of its experiment; the previous configuration is kept in CampaignVersion).",
    )

    objects = CampaignQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("launch_campaign", "Can schedule, launch, pause, resume and finish campaigns"),
            ("preview_campaign", "Can preview campaign content for a customer"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(trigger="event") | Q(trigger_event_type__isnull=False),
                name="campaign_event_trigger_has_type",
            ),
            models.CheckConstraint(
                condition=~Q(trigger="layer_entry") | Q(trigger_layer__isnull=False),
                name="campaign_layer_trigger_has_layer",
            ),
        ]
        indexes = [models.Index(fields=["status", "send_at"], name="campaign_status_send_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_triggered(self) -> bool:
        return self.trigger != self.Trigger.BROADCAST

    @property
    def is_locked(self) -> bool:
        """From scheduled on, audience, experiment, treatments, offers and content change only
        as a new version (``campaigns.services.editing``)."""
        return self.status != self.Status.DRAFT


class CampaignVersion(models.Model):
    """A configuration a campaign ran with before a new version replaced it."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    config = models.JSONField(help_text="The audience, experiment, channels, treatments and content of this version.")
    experiment_phase = models.PositiveIntegerField(
        null=True, blank=True, help_text="The experiment phase this version was analysed in."
    )
    replaced_at = models.DateTimeField(default=timezone.now)
    replaced_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=250, blank=True)

    class Meta:
        ordering = ["campaign", "number"]
        constraints = [models.UniqueConstraint(fields=["campaign", "number"], name="campaign_version_unique")]

    def __str__(self) -> str:
        return f"{self.campaign.key} v{self.number}"


class Treatment(models.Model):
    """What a (variant, layer) of a campaign receives: an offer and content per channel.

    An empty ``variant_key`` applies to every non-control variant without its own treatment
    (and to everyone when the campaign has no experiment); an empty ``layer`` applies to every
    layer. The control variant is treated only by a treatment that names it (baseline offer).
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="treatments")
    variant_key = models.SlugField(max_length=64, blank=True, help_text="Empty: every treated variant.")
    layer = models.ForeignKey(
        Layer, null=True, blank=True, on_delete=models.PROTECT, related_name="+", help_text="Empty: every layer."
    )
    referral_role = models.CharField(
        max_length=8,
        blank=True,
        choices=[("inviter", "Inviter"), ("invitee", "Invitee")],
        help_text="Referral campaigns: only for the inviter's or the invitee's reward. Empty: both.",
    )
    offer = models.ForeignKey("campaigns.Offer", null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["campaign", "variant_key", "layer_id", "referral_role"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "variant_key", "layer", "referral_role"],
                name="treatment_unique_layer",
                condition=Q(layer__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["campaign", "variant_key", "referral_role"],
                name="treatment_unique_any_layer",
                condition=Q(layer__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        role = f" ({self.referral_role})" if self.referral_role else ""
        return f"{self.campaign.key}: {self.variant_key or 'any variant'} × {self.layer or 'any layer'}{role}"


class Content(models.Model):
    """One channel's message for a treatment, as Django templates validated when saved.

    Email: ``subject`` + ``text`` (+ ``html``); SMS: ``text``; push and in-app: ``title`` + ``text``.
    """

    treatment = models.ForeignKey(Treatment, on_delete=models.CASCADE, related_name="contents")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    subject = models.CharField(max_length=250, blank=True)
    title = models.CharField(max_length=250, blank=True)
    text = models.TextField(blank=True, help_text="Plain-text body (email text part, SMS, push and in-app body).")
    html = models.TextField(blank=True, help_text="Email HTML body (optional).")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["treatment", "channel"], name="content_unique_channel")]

    def __str__(self) -> str:
        return f"{self.treatment} / {self.channel}"
