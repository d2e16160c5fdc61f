"""Who a customer is and what they did: customers, events, memberships, tags."""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone as dj_timezone

from segments.contacts import CONTACT_FIELDS, Channel  # re-exported: segments.models.Channel


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"'{value}' is not an IANA time zone (e.g. 'Europe/Paris').")


validate_phone = RegexValidator(r"^\+[1-9]\d{6,14}$", "Use E.164 format, e.g. +33612345678.")
validate_currency = RegexValidator(r"^[A-Z]{3}$", "Use an ISO 4217 code, e.g. EUR.")


class CustomerQuerySet(models.QuerySet["Customer"]):
    def reachable_by(self, channel: str) -> CustomerQuerySet:
        """Customers with a contact point for ``channel`` who consented and did not opt out since."""
        if channel == Channel.IN_APP:
            return self.all()
        contact, consent, opt_out = CONTACT_FIELDS[channel]
        return self.exclude(**{contact: ""}).filter(
            Q(**{f"{consent}__isnull": False})
            & (Q(**{f"{opt_out}__isnull": True}) | Q(**{f"{opt_out}__lt": models.F(consent)}))
        )


class Customer(models.Model):
    external_id = models.CharField(
        max_length=128, unique=True, help_text="The client's own identifier for this customer."
    )
    signed_up_at = models.DateTimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    locale = models.CharField(max_length=35, default="en", blank=True)
    attributes = models.JSONField(default=dict, blank=True, help_text="Free attributes, e.g. city tier, age band.")

    email = models.EmailField(blank=True)
    email_consent_at = models.DateTimeField(null=True, blank=True)
    email_opt_out_at = models.DateTimeField(null=True, blank=True)
    phone = models.CharField(max_length=16, blank=True, validators=[validate_phone])
    sms_consent_at = models.DateTimeField(null=True, blank=True)
    sms_opt_out_at = models.DateTimeField(null=True, blank=True)
    push_token = models.CharField(max_length=255, blank=True)
    push_consent_at = models.DateTimeField(null=True, blank=True)
    push_opt_out_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CustomerQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["signed_up_at"], name="customer_signed_up_idx")]

    def __str__(self) -> str:
        return self.external_id

    def can_receive(self, channel: str) -> bool:
        if channel == Channel.IN_APP:
            return True
        contact, consent, opt_out = (getattr(self, f) for f in CONTACT_FIELDS[channel])
        return bool(contact) and consent is not None and (opt_out is None or opt_out < consent)


class Role(models.Model):
    """A side of a two-sided platform (buyer, seller, …). A customer can hold several roles;
    a dimension scoped to a role layers only the customers holding it (docs/domain.md:
    two-sided platforms layer each role separately)."""

    key = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class CustomerRole(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="customer_roles", db_index=False)
    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="customer_roles", db_index=False)
    since = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["customer", "role"], name="customer_role_unique")]
        # A role-scoped recompute reads "every customer holding role R".
        indexes = [models.Index(fields=["role", "customer"], name="customer_role_role_idx")]

    def __str__(self) -> str:
        return f"{self.customer_id}:{self.role_id}"


class EventType(models.Model):
    """An extensible vocabulary of event types; unknown types are refused at ingestion."""

    id = models.SmallAutoField(primary_key=True)
    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    is_monetary = models.BooleanField(default=False, help_text="Events of this type carry an amount and currency.")
    is_builtin = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class Event(models.Model):
    """Something a customer did. ``event_id`` is client-supplied and makes ingestion idempotent."""

    event_id = models.CharField(max_length=128, unique=True)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="events", db_index=False)
    event_type = models.ForeignKey(EventType, on_delete=models.PROTECT, related_name="+", db_index=False)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    properties = models.JSONField(default=dict, blank=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, validators=[validate_currency])

    class Meta:
        indexes = [
            # Per-customer aggregates of one event type in a window (RFM, rule segments,
            # conversions after exposure); its prefix also serves "a customer's events".
            models.Index(fields=["customer", "event_type", "occurred_at"], name="event_cust_type_time_idx"),
            # Everything of a type in a time range (reports, lifecycle, recomputes).
            models.Index(fields=["event_type", "occurred_at"], name="event_type_time_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__isnull=True) | ~Q(currency=""), name="event_amount_has_currency"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type_id}@{self.occurred_at:%Y-%m-%d %H:%M} ({self.event_id})"


class Membership(models.Model):
    """One membership term of a customer on a plan; a renewal is a new term."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    plan = models.CharField(max_length=64)
    level = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=dj_timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "plan", "started_at"], name="membership_term_unique"),
            models.CheckConstraint(
                condition=Q(expires_at__gt=models.F("started_at")), name="membership_expires_after_start"
            ),
        ]
        indexes = [models.Index(fields=["expires_at"], name="membership_expires_idx")]

    def __str__(self) -> str:
        return f"{self.customer_id}:{self.plan} until {self.expires_at:%Y-%m-%d}"


class Tag(models.Model):
    class Family(models.TextChoices):
        STATIC = "static", "Static"
        CONSUMPTION = "consumption", "Consumption"
        BEHAVIOUR = "behaviour", "Behaviour"
        TIER = "tier", "Tier"

    class Source(models.TextChoices):
        COMPUTED = "computed", "Computed"
        MANUAL = "manual", "Manual"

    code = models.CharField(
        max_length=32,
        unique=True,
        validators=[RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", "Letters, digits, '_', '.' and '-' only.")],
        help_text="One code scheme for everyone, e.g. F3 = repurchased 3 times, A = high value.",
    )
    name = models.CharField(max_length=100)
    family = models.CharField(max_length=16, choices=Family.choices)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["family", "code"]

    def __str__(self) -> str:
        return f"{self.code} ({self.name})"


class CustomerTag(models.Model):
    """A tag a customer holds now. ``source`` says who put it there: a recompute
    (``computed``: tier tags, tag rules) or a person (``manual``, with ``assigned_by``).
    A computed write never changes or removes a manual row (``segments.services.tags``)."""

    # No database constraints: recomputes write tier tags in bulk (see segments.models.engine).
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="customer_tags", db_index=False, db_constraint=False
    )
    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="customer_tags", db_constraint=False)
    assigned_at = models.DateTimeField(default=dj_timezone.now)
    # db_default too: set-based INSERTs that name no source write computed rows.
    source = models.CharField(
        max_length=16, choices=Tag.Source.choices, default=Tag.Source.COMPUTED, db_default=Tag.Source.COMPUTED
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Manual tags: who set it.",
        db_constraint=False,  # a bulk-written table (see segments.models.engine)
        # Only manual rows name a user: the partial index below, not one entry per computed row.
        db_index=False,
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["customer", "tag"], name="customer_tag_unique")]
        indexes = [
            models.Index(
                fields=["assigned_by"], condition=Q(assigned_by__isnull=False), name="customer_tag_assigned_by_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}:{self.tag_id}"


class TagHistory(models.Model):
    """When a customer gained and lost a tag (tag rules and manual tags; tier moves are in
    ``LayerHistory``); ``lost_at`` is empty while they hold it."""

    # No database constraints: tag recomputes write history in bulk (see segments.models.engine).
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="tag_history", db_index=False, db_constraint=False
    )
    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="history", db_index=False, db_constraint=False)
    source = models.CharField(max_length=16, choices=Tag.Source.choices)
    gained_at = models.DateTimeField()
    lost_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Manual tags: who set it (or, once lost, who removed it).",
        db_constraint=False,  # a bulk-written table (see segments.models.engine)
    )

    class Meta:
        verbose_name_plural = "tag history"
        indexes = [
            models.Index(fields=["customer", "tag", "gained_at"], name="tag_hist_cust_idx"),
            models.Index(fields=["tag", "lost_at"], name="tag_hist_tag_lost_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "tag"], condition=Q(lost_at__isnull=True), name="tag_history_one_open"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}:{self.tag_id} {self.gained_at:%Y-%m-%d}–{self.lost_at or ''}"
