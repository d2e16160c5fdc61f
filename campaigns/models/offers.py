"""Offers (a benefit with validity) and coupon codes (one per customer, redeemable once)."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from segments.models import Customer

validate_code = RegexValidator(r"^[A-Z0-9][A-Z0-9-]{3,63}$", "Use 4–64 upper-case letters, digits and '-'.")


class Offer(models.Model):
    class BenefitKind(models.TextChoices):
        PERCENT_OFF = "percent_off", "Percent off"
        AMOUNT_OFF = "amount_off", "Amount off"
        POINTS = "points", "Points"
        FREE_PERIOD = "free_period", "Free period (days)"

    class CodeSource(models.TextChoices):
        GENERATED = "generated", "Generated per customer"
        POOL = "pool", "Drawn from an uploaded pool"
        NONE = "none", "No code"

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=150)
    benefit_kind = models.CharField(max_length=16, choices=BenefitKind.choices)
    value = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text="Percent (1–100), amount, points or days, by benefit kind.",
    )
    currency = models.CharField(max_length=3, blank=True, help_text="Amount off: ISO 4217 code.")
    code_source = models.CharField(max_length=16, choices=CodeSource.choices, default=CodeSource.GENERATED)
    code_prefix = models.CharField(
        max_length=12,
        blank=True,
        validators=[RegexValidator(r"^[A-Z0-9]*$", "Upper-case letters and digits only.")],
        help_text="Generated codes start with this.",
    )
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True, help_text="No coupon of this offer is valid after this.")
    validity_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="A coupon expires this many days after it is issued."
    )
    expires_after_membership_days = models.IntegerField(
        null=True,
        blank=True,
        help_text="Renewal: a coupon expires this many days after the customer's membership term ends "
        "(negative: before), aligning it with the expiry window.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(benefit_kind="percent_off") | Q(value__lte=100), name="offer_percent_at_most_100"
            ),
            models.CheckConstraint(
                condition=~Q(benefit_kind="amount_off") | ~Q(currency=""), name="offer_amount_has_currency"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.describe()})"

    def describe(self) -> str:
        value = format(self.value.normalize(), "f") if self.value is not None else ""
        return {
            self.BenefitKind.PERCENT_OFF: f"{value}% off",
            self.BenefitKind.AMOUNT_OFF: f"{value} {self.currency} off",
            self.BenefitKind.POINTS: f"{value} points",
            self.BenefitKind.FREE_PERIOD: f"{value} days free",
        }.get(self.benefit_kind, str(value))


class Coupon(models.Model):
    """A code for one offer. Generated codes are created for their customer; pool codes are
    uploaded unassigned (``customer`` empty) and drawn when a customer is granted the offer.
    Redemption is one conditional UPDATE (``redeemed_at IS NULL``), so exactly one of any
    number of concurrent attempts succeeds."""

    class Source(models.TextChoices):
        GENERATED = "generated", "Generated"
        POOL = "pool", "Pool"

    # No database constraints: see the note above ``Recipient`` (campaigns.models.delivery).
    offer = models.ForeignKey(
        Offer, on_delete=models.PROTECT, related_name="coupons", db_index=False, db_constraint=False
    )
    code = models.CharField(max_length=64, unique=True, validators=[validate_code])
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.GENERATED)
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    campaign = models.ForeignKey(
        "campaigns.Campaign",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="coupons",
        db_constraint=False,
    )
    recipient = models.OneToOneField(
        "campaigns.Recipient",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="coupon",
        db_constraint=False,
    )
    issued_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    redeemed_at = models.DateTimeField(null=True, blank=True)
    redemption_ref = models.CharField(max_length=128, blank=True, help_text="The client's reference, e.g. an order id.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["customer", "expires_at"], name="coupon_customer_idx"),
            # Drawing from a pool: the offer's unassigned codes.
            models.Index(fields=["offer", "id"], name="coupon_pool_free_idx", condition=Q(customer__isnull=True)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(redeemed_at__isnull=True) | Q(customer__isnull=False), name="coupon_redeemed_has_customer"
            ),
        ]

    def __str__(self) -> str:
        return self.code
