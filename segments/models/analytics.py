"""Analytics runs: a retention table or a funnel computed by a Celery task, with a status.

At a million customers a retention table or a funnel takes seconds of SQL; an API client
or an admin page asks for a run instead of holding a web worker (the way PostHog's query
API or Statsig's result jobs do) and reads its status until it is done. ``spec`` is the
validated spec in a canonical JSON form and ``spec_hash`` its SHA-256: the same question
asked again by the same owner while a run of it is in flight, or done less than
``GROWTH["ANALYTICS_RUN_FRESH_SECONDS"]`` ago, gets that run back (``segments.analytics.runs``).
A partial unique constraint allows one in-flight run per owner and spec, so two callers
racing on the same question create one run.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from access.models import ApiKey


class AnalyticsRun(models.Model):
    class Kind(models.TextChoices):
        RETENTION = "retention", "Retention"
        FUNNEL = "funnel", "Funnel"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    IN_FLIGHT = (Status.QUEUED, Status.RUNNING)

    # Not a sequence: a run's URL does not tell how many runs other keys asked for.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    params = models.JSONField(help_text="The query-string parameters as asked (the task parses them again).")
    spec = models.JSONField(help_text="The validated spec, canonical (defaults filled in).")
    spec_hash = models.CharField(max_length=64, help_text="SHA-256 of the canonical spec.")
    # Whose runs these are: 'key:<id>' for an API key, 'admin' for the staff pages (every
    # staff user with the analytics permission sees the same numbers).
    owner = models.CharField(max_length=40)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="Exactly the synchronous endpoint's JSON.")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "kind", "spec_hash", "-created_at"], name="analytics_run_lookup_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "kind", "spec_hash"],
                condition=Q(status__in=["queued", "running"]),
                name="analytics_run_one_in_flight",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.status} {self.created_at:%Y-%m-%d %H:%M}"
