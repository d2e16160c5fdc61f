"""Rule segments and computed dimensions (tiers), materialized by recomputes, with history.

- A ``Segment`` is a rule (validated JSON) compiled to one SQL query; its members are
  materialized in ``SegmentMembership``.
- A ``Dimension`` is a family of ``Layer``s in which every customer sits in exactly one
  layer (MECE). ``CustomerLayer`` holds each customer's current layer (one row per
  customer and dimension, enforced by a unique constraint); ``LayerHistory`` records
  when a customer entered and left each layer.
- A ``RecomputeRun`` records each recompute (when, how long, outcome); a partial
  unique constraint allows one running recompute per target.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from segments.models.customers import Customer, Role, Tag


class Segment(models.Model):
    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    rule = models.JSONField(help_text="The segment rule; validated against the rule schema when saved.")
    is_active = models.BooleanField(default=True, help_text="Inactive segments are not recomputed.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    computed_at = models.DateTimeField(null=True, blank=True, editable=False)
    size = models.PositiveIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name


# The rows a recompute writes in bulk (segment memberships, customer layers, layer history,
# tier tags) carry no database foreign-key constraints (db_constraint=False), as
# experiments' assignments and campaigns' deliveries: every such row is written set-based
# from ids the same statement reads from their tables, and a deferred constraint costs one
# check query per row at commit (1M customers: millions, most of a first recompute).
# Deletes still cascade, in Django (on_delete).


class TagRule(models.Model):
    """A computed tag: the customers matching ``rule`` (the segment rule language) hold
    ``tag`` (source "computed"); materialized by the recompute with ``TagHistory``.
    The code, name and family live on the tag (``segments.services.tags``)."""

    tag = models.OneToOneField(Tag, on_delete=models.CASCADE, related_name="rule")
    rule = models.JSONField(help_text="Who holds the tag; validated against the rule schema when saved.")
    is_active = models.BooleanField(default=True, help_text="Inactive rules are not recomputed (holders keep the tag).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    computed_at = models.DateTimeField(null=True, blank=True, editable=False)
    size = models.PositiveIntegerField(null=True, blank=True, editable=False, help_text="Holders after the last run.")

    class Meta:
        ordering = ["tag__code"]

    def __str__(self) -> str:
        return f"rule for {self.tag.code}"


class SegmentMembership(models.Model):
    segment = models.ForeignKey(
        Segment, on_delete=models.CASCADE, related_name="memberships", db_index=False, db_constraint=False
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="segment_memberships", db_constraint=False
    )
    since = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "customer"], name="segment_membership_unique")]

    def __str__(self) -> str:
        return f"{self.segment_id}:{self.customer_id}"


class Dimension(models.Model):
    class Kind(models.TextChoices):
        RFM = "rfm", "RFM value tiers"
        LIFECYCLE = "lifecycle", "Lifecycle stages"
        JOURNEY = "journey", "Key-path journey"
        LEVEL = "level", "Membership levels"
        EXPIRY = "expiry", "Membership expiry windows"
        VALUE_RANK = "value_rank", "Value pyramid (rank by value)"

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    config = models.JSONField(
        default=dict, blank=True, help_text="Thresholds and windows; validated per kind when saved."
    )
    role = models.ForeignKey(
        Role,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="dimensions",
        help_text="Only customers holding this role are layered (and ranked) by the dimension; empty: everyone.",
    )
    is_active = models.BooleanField(default=True)
    computed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name


class Layer(models.Model):
    dimension = models.ForeignKey(Dimension, on_delete=models.CASCADE, related_name="layers", db_index=False)
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=100)
    position = models.PositiveSmallIntegerField(default=0)
    tag = models.OneToOneField(
        Tag,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="layer",
        help_text="Tier tag (family 'tier') written back onto the layer's customers.",
    )

    class Meta:
        ordering = ["dimension", "position"]
        constraints = [models.UniqueConstraint(fields=["dimension", "key"], name="layer_key_unique")]

    def __str__(self) -> str:
        return f"{self.dimension.key}:{self.key}"


class CustomerLayer(models.Model):
    """A customer's current layer in a dimension: exactly one row per (customer, dimension)."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="layers", db_index=False, db_constraint=False
    )
    dimension = models.ForeignKey(
        Dimension, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    # No index of its own: every reader names the dimension too, and (dimension, layer)
    # serves them; a fourth index would be maintained row by row on every first recompute.
    layer = models.ForeignKey(
        Layer, on_delete=models.CASCADE, related_name="members", db_index=False, db_constraint=False
    )
    since = models.DateTimeField(default=timezone.now, help_text="When the customer entered this layer.")
    computed_at = models.DateTimeField(
        default=timezone.now, help_text="When this row was last written (the dimension's computed_at is the last run)."
    )
    valid_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Membership levels: the level is kept until then even if its condition is no longer met.",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["customer", "dimension"], name="customer_layer_unique")]
        indexes = [models.Index(fields=["dimension", "layer"], name="customer_layer_dim_idx")]

    def __str__(self) -> str:
        return f"{self.customer_id}:{self.layer_id}"


class LayerHistory(models.Model):
    """When a customer entered and left a layer; ``left_at`` is empty while they are in it."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="layer_history", db_index=False, db_constraint=False
    )
    dimension = models.ForeignKey(
        Dimension, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    layer = models.ForeignKey(
        Layer, on_delete=models.CASCADE, related_name="history", db_index=False, db_constraint=False
    )
    entered_at = models.DateTimeField()
    left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "layer history"
        # No (dimension, left_at) index: only the recompute's rare "any row left open?" probe
        # used it, and every first recompute paid one insertion per customer into it.
        indexes = [models.Index(fields=["customer", "dimension", "entered_at"], name="layer_hist_cust_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "dimension"], condition=Q(left_at__isnull=True), name="layer_history_one_open"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}:{self.layer_id} {self.entered_at:%Y-%m-%d}–{self.left_at or ''}"


class RecomputeRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        COMMAND = "command", "Management command"
        ADMIN = "admin", "Admin"
        API = "api", "Service call"

    target = models.CharField(max_length=80, help_text="'dimension:<key>', 'tag:<code>' or 'segment:<key>'.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.API)
    as_of = models.DateTimeField(null=True, blank=True, help_text="The instant relative dates were computed from.")
    mece_ok = models.BooleanField(
        null=True, blank=True, help_text="Dimensions: whether every customer sits in exactly one layer after the run."
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    customers = models.PositiveIntegerField(null=True, blank=True, help_text="Customers placed or matched.")
    changed = models.PositiveIntegerField(
        null=True, blank=True, help_text="Customers whose layer or membership changed."
    )
    error = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Layer sizes, transition counts, the MECE check.")

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["target", "-started_at"], name="recompute_target_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["target"], condition=Q(status="running"), name="recompute_one_running_per_target"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.target} {self.status} {self.started_at:%Y-%m-%d %H:%M}"
