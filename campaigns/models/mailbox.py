"""The demo mailbox: messages captured by ``campaigns.mailbox.DatabaseMailboxBackend``."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class MailboxMessage(models.Model):
    channel = models.CharField(max_length=16, default="email")
    from_email = models.CharField(max_length=254, blank=True)
    to = models.TextField(help_text="Recipients, comma separated (email), or the phone / push token.")
    subject = models.CharField(max_length=998, blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    delivery_key = models.CharField(max_length=64, blank=True, db_index=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = "mailbox message"

    def __str__(self) -> str:
        return f"{self.to}: {self.subject}"
