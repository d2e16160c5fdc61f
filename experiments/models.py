"""Experiments: variants, phases, namespaces (mutual exclusion), holdouts, goal metrics,
sticky assignments with a pre-treatment segment snapshot, exposures and conversions.

Assignment itself is computed by ``experiments.assignment`` (the GrowthBook hash spec,
no Django); these models store its inputs and its sticky results.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from segments.models import Customer, EventType, Layer, Segment

UNIT_INTERVAL = [MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(1))]


class Namespace(models.Model):
    """A layer of mutual exclusion: experiments in one namespace take disjoint ranges of
    the namespace hash, so a customer is in at most one of them. (GrowthBook calls these
    namespaces; "layer" is kept for the segment dimensions' layers.)"""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class Holdout(models.Model):
    """A global holdout: ``percent`` of all customers, chosen by a stable hash of the
    customer id, kept out of every experiment (and campaign) it covers."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    percent = models.DecimalField(
        max_digits=5, decimal_places=2, validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))]
    )
    seed = models.CharField(max_length=64, editable=False, help_text="Hash seed; fixed at creation.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return f"{self.name} ({self.percent}%)"


class ExperimentQuerySet(models.QuerySet["Experiment"]):
    def running(self) -> ExperimentQuerySet:
        return self.filter(status=Experiment.Status.RUNNING)


class Experiment(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        STOPPED = "stopped", "Stopped"

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=150)
    hypothesis = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT, editable=False)

    coverage = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal(1),
        validators=UNIT_INTERVAL,
        help_text="Share of targeted customers who enter the experiment (0–1).",
    )
    namespace = models.ForeignKey(
        Namespace, null=True, blank=True, on_delete=models.PROTECT, related_name="experiments"
    )
    namespace_start = models.DecimalField(max_digits=5, decimal_places=4, default=Decimal(0), validators=UNIT_INTERVAL)
    namespace_end = models.DecimalField(max_digits=5, decimal_places=4, default=Decimal(1), validators=UNIT_INTERVAL)
    holdout = models.ForeignKey(Holdout, null=True, blank=True, on_delete=models.PROTECT, related_name="experiments")

    include_segments = models.ManyToManyField(Segment, blank=True, related_name="+")
    exclude_segments = models.ManyToManyField(Segment, blank=True, related_name="+")
    include_layers = models.ManyToManyField(Layer, blank=True, related_name="+")
    exclude_layers = models.ManyToManyField(Layer, blank=True, related_name="+")

    minimum_detectable_effect = models.DecimalField(
        max_digits=6,
        decimal_places=4,
        default=Decimal("0.10"),
        help_text="Smallest relative lift worth detecting (0.10 = +10%); drives the power status.",
    )

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    stopped_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ExperimentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("change_experiment_status", "Can start, pause, resume and stop experiments"),
            ("view_report", "Can view lift reports"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(namespace_start__lt=models.F("namespace_end")), name="experiment_namespace_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Phase(models.Model):
    """A period of an experiment with fixed hash inputs. Starting a new phase re-seeds the
    hash; the report analyses the current phase only."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="phases")
    number = models.PositiveSmallIntegerField()
    seed = models.CharField(max_length=100)
    coverage = models.DecimalField(max_digits=5, decimal_places=4, validators=UNIT_INTERVAL)
    weights = models.JSONField(help_text="Variant key → weight, frozen for the phase.")
    reason = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["experiment", "number"]
        constraints = [models.UniqueConstraint(fields=["experiment", "number"], name="phase_number_unique")]

    def __str__(self) -> str:
        return f"{self.experiment.key} phase {self.number}"


class Variant(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=100)
    weight = models.DecimalField(max_digits=5, decimal_places=4, validators=UNIT_INTERVAL)
    payload = models.JSONField(default=dict, blank=True)
    is_control = models.BooleanField(default=False)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["experiment", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "key"], name="variant_key_unique"),
            models.UniqueConstraint(fields=["experiment"], condition=Q(is_control=True), name="variant_one_control"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.key}:{self.key}"


class Metric(models.Model):
    class Role(models.TextChoices):
        PRIMARY = "primary", "Primary"
        SECONDARY = "secondary", "Secondary"
        GUARDRAIL = "guardrail", "Guardrail"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="metrics")
    event_type = models.ForeignKey(EventType, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.PRIMARY)
    window_hours = models.PositiveIntegerField(default=7 * 24, help_text="Conversion window after first exposure.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "event_type", "role"], name="metric_unique"),
            models.UniqueConstraint(fields=["experiment"], condition=Q(role="primary"), name="metric_one_primary"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.key}:{self.role}:{self.event_type.code}"


class Assignment(models.Model):
    """A customer's sticky variant in one phase, with their layers at assignment time
    (``segment_snapshot``: dimension key → layer key) and their exposure record."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="assignments", db_index=False)
    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, related_name="assignments", db_index=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="assignments", db_index=False)
    assigned_at = models.DateTimeField(default=timezone.now)
    segment_snapshot = models.JSONField(default=dict, blank=True)
    first_exposed_at = models.DateTimeField(null=True, blank=True)
    last_exposed_at = models.DateTimeField(null=True, blank=True)
    exposure_count = models.PositiveIntegerField(default=0)
    conflicting_exposure = models.BooleanField(
        default=False, help_text="Exposed to a variant other than the assigned one; excluded from analysis."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["phase", "customer"], name="assignment_phase_customer_unique")]
        indexes = [models.Index(fields=["experiment", "phase", "variant"], name="assignment_exp_phase_idx")]

    def __str__(self) -> str:
        return f"{self.phase_id}:{self.customer_id}→{self.variant_id}"


class Conversion(models.Model):
    """The first goal event of a metric within its window after first exposure."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="conversions", db_index=False)
    metric = models.ForeignKey(Metric, on_delete=models.CASCADE, related_name="conversions")
    converted_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["assignment", "metric"], name="conversion_unique")]

    def __str__(self) -> str:
        return f"{self.assignment_id}:{self.metric_id}@{self.converted_at:%Y-%m-%d %H:%M}"
