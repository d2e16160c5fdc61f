"""Referral codes and referrals, with an audit trail of every attribution decision."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from segments.models import Customer


class ReferralCode(models.Model):
    """A customer's personal referral code (one per customer)."""

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="+")
    code = models.CharField(max_length=32, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    rewarded_count = models.PositiveIntegerField(
        default=0, editable=False, help_text="Referrals rewarded so far; checked against the cap under a row lock."
    )

    def __str__(self) -> str:
        return self.code


class Referral(models.Model):
    """An invitee attributed to an inviter. One per invitee (the first valid code wins), so a
    qualifying event is attributed exactly once and rewarded at most once."""

    class Status(models.TextChoices):
        ATTRIBUTED = "attributed", "Attributed (waiting for the qualifying event)"
        REWARDED = "rewarded", "Rewarded"
        REJECTED = "rejected", "Rejected"

    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.CASCADE, related_name="referrals")
    code = models.ForeignKey(ReferralCode, on_delete=models.PROTECT, related_name="referrals")
    inviter = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    invitee = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ATTRIBUTED)
    reason = models.CharField(max_length=64, blank=True, help_text="Why rejected: cap_reached, …")
    attributed_event_id = models.BigIntegerField(null=True, blank=True)
    qualifying_event_id = models.BigIntegerField(null=True, blank=True, unique=True)
    attributed_at = models.DateTimeField(default=timezone.now)
    qualified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["inviter", "status"], name="referral_inviter_idx")]

    def __str__(self) -> str:
        return f"{self.inviter_id}→{self.invitee_id} {self.status}"


class ReferralAudit(models.Model):
    """Every referral decision, including the refused ones (self-referral, unknown code,
    already referred, cap reached), with the event that caused it."""

    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.CASCADE, related_name="+")
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    event_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=32)
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["campaign", "-at"], name="referral_audit_idx")]

    def __str__(self) -> str:
        return f"{self.action} {self.customer_id} @{self.at:%Y-%m-%d %H:%M}"
