"""Experiments: variants, phases, namespaces (mutual exclusion), holdouts, goal metrics,
sticky assignments with a pre-treatment segment snapshot, exposures and conversions.

Assignment itself is computed by ``experiments.assignment`` (the GrowthBook hash spec,
no Django); these models store its inputs (``Phase``: seed, coverage, ordered weights)
and its sticky results (``Assignment``, ``HoldoutMember``). Every write goes through
``experiments.services``.

Segment snapshots are dictionary-encoded: each distinct combination of layers a customer
sits in at assignment time (``{dimension key: layer key}``) is one ``SegmentSnapshot``
row, and an assignment points at it with a narrow integer. A lift report then groups
10M assignments by ``(variant_id, snapshot_id)`` in one pass over a narrow table and
rolls the few hundred snapshots up to every dimension's layers in memory; a JSON column
on the row had to be parsed once per dimension and doubled the table (measured in the
experiments README section of the final report).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
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

    class Meta:
        ordering = ["key"]

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

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.name} ({self.percent}%)"


class ExperimentQuerySet(models.QuerySet["Experiment"]):
    def running(self) -> ExperimentQuerySet:
        return self.filter(status=Experiment.Status.RUNNING)

    def active(self) -> ExperimentQuerySet:
        """Running or paused: the experiment has an open phase and holds its namespace range."""
        return self.filter(status__in=[Experiment.Status.RUNNING, Experiment.Status.PAUSED])


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
    managed_by = models.CharField(
        max_length=100,
        blank=True,
        default="",
        editable=False,
        help_text="The application that splits its audience with this experiment (e.g. 'campaign:winback'), "
        "set through experiments.services.experiment_manager_set. The generic assignment API never assigns "
        "or exposes anyone in a managed experiment: its owner decides who is in it.",
    )

    # Once an experiment has started these change only through the allocation flow of
    # ``experiments.services.experiment_allocation_update`` (raise coverage, change
    # weights) or a new phase; the admin shows them read-only.
    ASSIGNMENT_FIELDS = (
        "coverage",
        "namespace",
        "namespace_start",
        "namespace_end",
        "holdout",
        "include_segments",
        "exclude_segments",
        "include_layers",
        "exclude_layers",
    )

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
    reporting_currency = models.CharField(
        max_length=3,
        blank=True,
        validators=[RegexValidator(r"^[A-Z]{3}$", "Use an ISO 4217 code, e.g. EUR.")],
        help_text="Currency of the value metrics (ISO 4217). Empty: the one currency the events use; "
        "events in any other currency make value metrics undefined, never summed together.",
    )
    currency_rates = models.JSONField(
        default=dict,
        blank=True,
        help_text='The declared conversion rule: {"USD": "0.92"} = 1 USD counts as 0.92 of the reporting '
        "currency; each event's amount is converted at this rate and rounded to the cent. A currency "
        "without a rate makes value metrics undefined.",
    )

    # The analysis plan (issue 14): set while the experiment is a draft; ``experiment_start``
    # (and every new phase) freezes it, with the metrics, into the phase's ``AnalysisPlan``,
    # and ``experiment_plan_update`` refuses to change it while running unless a new phase
    # starts. The report reads the frozen plan, never these fields.
    PLAN_FIELDS = (
        "minimum_detectable_effect",
        "inference_mode",
        "planned_sample_size",
        "planned_end_at",
        "fixed_audience",
        "alpha",
        "correction",
        "confirmatory_dimensions",
        "reporting_currency",
        "currency_rates",
    )

    class InferenceMode(models.TextChoices):
        SEQUENTIAL = "sequential", "Always valid (sequential): read it any day"
        FIXED = "fixed", "Fixed horizon: verdicts only once the planned horizon is reached"

    class Correction(models.TextChoices):
        HOLM = "holm", "Holm (family-wise error rate)"
        BH = "bh", "Benjamini-Hochberg (false discovery rate)"

    inference_mode = models.CharField(max_length=16, choices=InferenceMode.choices, default=InferenceMode.SEQUENTIAL)
    planned_sample_size = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Customers in all arms together at the planned horizon (tunes the sequential test).",
    )
    planned_end_at = models.DateTimeField(null=True, blank=True, help_text="Planned end of the experiment.")
    fixed_audience = models.BooleanField(
        default=False,
        help_text="The audience is fixed in advance (a campaign broadcast): no more customers will come.",
    )
    alpha = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.05"),
        validators=[MinValueValidator(Decimal("0.001")), MaxValueValidator(Decimal("0.2"))],
        help_text="Significance level of the confirmatory family.",
    )
    correction = models.CharField(max_length=8, choices=Correction.choices, default=Correction.HOLM)
    confirmatory_dimensions = models.JSONField(
        default=list,
        blank=True,
        help_text="Dimension keys whose layers are confirmatory (part of the decision family).",
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
        indexes = [models.Index(fields=["status"], name="experiment_status_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.RUNNING, self.Status.PAUSED)


class Phase(models.Model):
    """A period of an experiment with one hash seed: the hash inputs in force.

    Phase 1's seed is the experiment key; a new phase gets a new seed, so everyone is
    re-randomized and the report analyses the current phase only. Within a phase,
    ``coverage`` may only rise and ``weights`` may change (sticky assignments keep
    everyone already assigned where they are); the variant set is fixed.
    """

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="phases")
    number = models.PositiveSmallIntegerField()
    seed = models.CharField(max_length=100)
    coverage = models.DecimalField(max_digits=5, decimal_places=4, validators=UNIT_INTERVAL)
    weights = models.JSONField(
        help_text='Ordered allocation in force: [{"variant": key, "weight": "0.5"}, ...] (GrowthBook variation order).'
    )
    reason = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["experiment", "number"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "number"], name="phase_number_unique"),
            models.UniqueConstraint(
                fields=["experiment"], condition=Q(ended_at__isnull=True), name="phase_one_open_per_experiment"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.key} phase {self.number}"


class AnalysisPlan(models.Model):
    """The analysis plan of one phase, frozen when the phase opens (``experiment_start``,
    a new phase): what the report may call a decision. Rows are never edited; a changed
    plan needs a new phase (``experiment_plan_update``)."""

    phase = models.OneToOneField(Phase, on_delete=models.CASCADE, related_name="plan")
    primary_metric = models.CharField(max_length=64, blank=True, help_text="Event type code.")
    secondary_metrics = models.JSONField(default=list)
    guardrail_metrics = models.JSONField(
        default=list, help_text='[{"metric": code, "margin": "0.002"}]: non-inferiority margin in absolute points.'
    )
    confirmatory_dimensions = models.JSONField(default=list)
    inference_mode = models.CharField(max_length=16, choices=Experiment.InferenceMode.choices)
    planned_sample_size = models.PositiveIntegerField(null=True, blank=True)
    planned_end_at = models.DateTimeField(null=True, blank=True)
    fixed_audience = models.BooleanField(default=False)
    minimum_detectable_effect = models.DecimalField(max_digits=6, decimal_places=4)
    alpha = models.DecimalField(max_digits=4, decimal_places=3)
    correction = models.CharField(max_length=8, choices=Experiment.Correction.choices)
    recorded_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"plan of {self.phase}"


class Variant(models.Model):
    """An arm of an experiment. ``weight`` is a fraction (0.5 = 50%); the active variants'
    weights sum to 1 and exactly one of them is the control. ``position`` orders the
    variants as GrowthBook variations (bucket ranges are laid out in this order). A variant
    removed by a new phase is deactivated, not deleted: earlier phases' assignments keep it."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=100)
    weight = models.DecimalField(
        max_digits=5, decimal_places=4, validators=UNIT_INTERVAL, help_text="Share of traffic: 0.5 = 50%."
    )
    payload = models.JSONField(default=dict, blank=True, help_text="Returned to API clients with the variant key.")
    is_control = models.BooleanField(default=False)
    position = models.PositiveSmallIntegerField(default=0)
    is_active = models.BooleanField(
        default=True,
        editable=False,
        help_text="False once removed by a new phase; kept for the earlier phases' assignments.",
    )

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

    class Kind(models.TextChoices):
        # What is measured per customer within the window after first exposure (issue 15);
        # ``experiments.metric_kinds`` turns each kind into per-customer SQL and a statistic.
        CONVERSION = "conversion", "Conversion (did the customer do it at least once)"
        COUNT = "count", "Count per customer (e.g. orders)"
        SUM = "sum", "Sum of amount per customer (e.g. revenue)"
        RATIO = "ratio", "Ratio (e.g. revenue / orders = average order value)"

    class Part(models.TextChoices):
        """What a ratio's numerator or denominator measures of its event type."""

        CONVERSION = "conversion", "Conversions"
        COUNT = "count", "Count"
        SUM = "sum", "Sum of amount"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="metrics")
    event_type = models.ForeignKey(EventType, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.PRIMARY)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CONVERSION)
    refund_event_type = models.ForeignKey(
        EventType,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        help_text="Sums (and a ratio's sums): subtract this event type's amounts (refunds) = net revenue.",
    )
    numerator_part = models.CharField(
        max_length=16, choices=Part.choices, default=Part.SUM, help_text="Ratio: what the numerator measures."
    )
    denominator_event_type = models.ForeignKey(
        EventType,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        help_text="Ratio only: the denominator's event type (the numerator's is ``event_type``).",
    )
    denominator_part = models.CharField(
        max_length=16, choices=Part.choices, default=Part.COUNT, help_text="Ratio: what the denominator measures."
    )
    cap_percentile = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.5")), MaxValueValidator(Decimal(1))],
        help_text="Count/sum/ratio numerator: cap each customer's value at this percentile of all customers "
        "(0.99 = 99th), computed in the database. Empty: no capping.",
    )
    cuped_lookback_days = models.PositiveSmallIntegerField(
        default=14,
        validators=[MaxValueValidator(365)],
        help_text="CUPED: the same metric over this many days before each customer's first exposure "
        "reduces variance. 0: off.",
    )
    window_hours = models.PositiveIntegerField(default=7 * 24, help_text="Conversion window after first exposure.")
    noninferiority_margin = models.DecimalField(
        max_digits=6,
        decimal_places=4,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Guardrails: tolerated worsening in absolute points (0.002 = 0.2 pts) before harm is flagged.",
    )
    conversions_watermark = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Events received before this instant have been turned into conversions (incremental refresh).",
    )
    # Stored per-customer values (``MetricValue``), written by the conversion refresh: what
    # they were computed with (kind, event types, window, lookback, currency rule), so a
    # report reads them only while they still mean this metric, and the currencies seen.
    values_signature = models.CharField(max_length=64, blank=True, default="", editable=False)
    values_currencies = models.JSONField(default=list, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "event_type", "role", "kind"],
                condition=~Q(kind="ratio"),
                name="metric_unique_kind",
            ),
            models.UniqueConstraint(
                fields=[
                    "experiment",
                    "event_type",
                    "role",
                    "numerator_part",
                    "denominator_event_type",
                    "denominator_part",
                ],
                condition=Q(kind="ratio"),
                name="metric_unique_ratio",
            ),
            models.CheckConstraint(
                condition=Q(kind="ratio", denominator_event_type__isnull=False)
                | (~Q(kind="ratio") & Q(denominator_event_type__isnull=True)),
                name="metric_ratio_has_denominator",
            ),
            models.UniqueConstraint(fields=["experiment"], condition=Q(role="primary"), name="metric_one_primary"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.key}:{self.role}:{self.key}"

    @property
    def key(self) -> str:
        """The metric's name in plans, reports and exports: the event type code for a
        conversion (as before value metrics), ``code:count``, ``code:sum`` (``code:net`` net
        of refunds), and ``numerator/denominator`` for a ratio (e.g. ``purchase:sum/purchase:count``)."""
        code = self.event_type.code
        if self.kind == self.Kind.CONVERSION:
            return code
        if self.kind != self.Kind.RATIO:
            return f"{code}:{'net' if self.kind == self.Kind.SUM and self.refund_event_type_id else self.kind}"
        assert self.denominator_event_type is not None
        numerator = (
            f"{code}:{'net' if self.numerator_part == 'sum' and self.refund_event_type_id else self.numerator_part}"
        )
        return f"{numerator}/{self.denominator_event_type.code}:{self.denominator_part}"


class SegmentSnapshot(models.Model):
    """One distinct combination of layers (``{dimension key: layer key}``) a customer sat
    in when assigned; assignments point at it (dictionary encoding, see the module doc).

    ``key`` is the canonical form: ``dimension=layer`` pairs sorted by dimension and joined
    by ``|`` (``""`` for a customer in no layer). Rows are only ever added.
    """

    key = models.TextField(unique=True)
    layers = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return self.key or "(no layers)"

    @staticmethod
    def canonical_key(layers: dict[str, str]) -> str:
        return "|".join(f"{dimension}={layer}" for dimension, layer in sorted(layers.items()))

    @staticmethod
    def parse_key(key: str) -> dict[str, str]:
        return dict(pair.split("=", 1) for pair in key.split("|")) if key else {}


# High-volume rows (assignments, holdout members) reference their experiment, phase,
# variant, snapshot, holdout and customer without a database foreign-key constraint
# (``db_constraint=False``; conversions likewise for their copied phase/variant/snapshot):
# PostgreSQL checks each constrained row with a trigger at commit (and locks the customer
# row FOR KEY SHARE), which measured ~70 ms per 1,000 assignment rows for the five
# constraints -- more than the insert itself, and over budget for 1M rows in 20 s. The ids
# come from rows the services have just read; configuration rows are never deleted while
# assignments exist (variants are deactivated, phases closed), and Django's on_delete still
# cascades when an experiment or a customer is deleted through the ORM (the customer
# column keeps its index for that).


class Assignment(models.Model):
    """A customer's sticky variant in one phase, with their layers at assignment time
    (``snapshot``) and their exposure record (first time kept, later ones counted)."""

    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="assignments", db_index=False, db_constraint=False
    )
    phase = models.ForeignKey(
        Phase, on_delete=models.CASCADE, related_name="assignments", db_index=False, db_constraint=False
    )
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    variant = models.ForeignKey(
        Variant, on_delete=models.CASCADE, related_name="assignments", db_index=False, db_constraint=False
    )
    assigned_at = models.DateTimeField(default=timezone.now)
    snapshot = models.ForeignKey(
        SegmentSnapshot,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
        help_text="The customer's layers when assigned (pre-treatment).",
    )
    first_exposed_at = models.DateTimeField(null=True, blank=True)
    last_exposed_at = models.DateTimeField(null=True, blank=True)
    exposure_count = models.PositiveIntegerField(default=0)
    conflicting_exposure = models.BooleanField(
        default=False, help_text="Exposed to a variant other than the assigned one; excluded from analysis."
    )

    class Meta:
        # Three indexes, no more (each costs every bulk insert): the primary key, (phase,
        # customer) for the sticky lookups and ON CONFLICT, and customer for deleting a
        # customer. The report scans a phase's rows; nothing needs (experiment, phase, variant).
        constraints = [models.UniqueConstraint(fields=["phase", "customer"], name="assignment_phase_customer_unique")]

    def __str__(self) -> str:
        return f"{self.phase_id}:{self.customer_id}→{self.variant_id}"

    @property
    def segment_snapshot(self) -> dict[str, str]:
        """``{dimension key: layer key}`` at assignment time."""
        return dict(self.snapshot.layers)


class HoldoutMember(models.Model):
    """A customer the experiment's holdout kept out of one phase (they would otherwise
    have been considered for it: targeted). Stored so the holdout decision is sticky like an
    assignment and so total impact can be measured: the report compares these customers
    (with their pre-treatment snapshot) with the assigned ones."""

    holdout = models.ForeignKey(
        Holdout, on_delete=models.CASCADE, related_name="members", db_index=False, db_constraint=False
    )
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="holdout_members", db_index=False, db_constraint=False
    )
    phase = models.ForeignKey(
        Phase, on_delete=models.CASCADE, related_name="holdout_members", db_index=False, db_constraint=False
    )
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    snapshot = models.ForeignKey(
        SegmentSnapshot, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    held_out_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["phase", "customer"], name="holdout_member_phase_customer_unique")
        ]
        indexes = [models.Index(fields=["holdout", "experiment"], name="holdout_member_holdout_idx")]

    def __str__(self) -> str:
        return f"{self.holdout_id}:{self.phase_id}:{self.customer_id}"


class Conversion(models.Model):
    """The first goal event of a metric within its window after first exposure.

    ``phase``, ``variant`` and ``snapshot`` are copied from the assignment when the row is
    written (they never change), so conversion counts per variant and layer come from this
    table alone, without a join to the assignments. Conversions of an assignment flagged
    for a conflicting exposure are deleted with the flag.
    """

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="conversions", db_index=False)
    metric = models.ForeignKey(Metric, on_delete=models.CASCADE, related_name="conversions")
    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    variant = models.ForeignKey(
        Variant, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    snapshot = models.ForeignKey(
        SegmentSnapshot, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    converted_at = models.DateTimeField()
    first_exposed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text=(
            "The assignment's first exposure this conversion was computed from (its window's start), "
            "so a report can leave out customers whose window is still open without a join; rewritten "
            "when the first exposure moves. Null only on rows written outside the engine."
        ),
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["assignment", "metric"], name="conversion_unique")]
        indexes = [models.Index(fields=["phase", "metric"], name="conversion_phase_metric_idx")]

    def __str__(self) -> str:
        return f"{self.assignment_id}:{self.metric_id}@{self.converted_at:%Y-%m-%d %H:%M}"


class MetricValue(models.Model):
    """A value metric's per-customer variables for one assignment (issue 15), materialized by
    the conversion refresh so the report's GROUP BY reads stored numbers, not the events.

    ``v0..v3``: the metric kind's post-exposure variables, then (CUPED) their pre-period
    twins, in ``experiments.metric_kinds`` order; money in integer hundredths of the
    reporting currency, counts as counts, uncapped (the cap is a percentile over the
    population, applied at report time). Only assignments with a non-zero variable have a
    row: an absent row means all zeros. ``phase``, ``variant``, ``snapshot`` and
    ``first_exposed_at`` are copied from the assignment, as on ``Conversion``.
    """

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="+", db_index=False)
    metric = models.ForeignKey(Metric, on_delete=models.CASCADE, related_name="+", db_index=False)
    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    variant = models.ForeignKey(
        Variant, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    snapshot = models.ForeignKey(
        SegmentSnapshot, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    first_exposed_at = models.DateTimeField()
    first_exposed_on = models.DateField()  # its UTC day: the key of MetricValueCell
    v0 = models.BigIntegerField(default=0)
    v1 = models.BigIntegerField(default=0)
    v2 = models.BigIntegerField(default=0)
    v3 = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["assignment", "metric"], name="metric_value_unique")]
        indexes = [models.Index(fields=["phase", "metric", "first_exposed_on"], name="metric_value_phase_metric_idx")]

    def __str__(self) -> str:
        return f"{self.assignment_id}:{self.metric_id}"


def _exact_sum(name: str) -> models.DecimalField:
    return models.DecimalField(max_digits=40, decimal_places=0, default=0, db_column=name)


class MetricValueCell(models.Model):
    """Sufficient statistics of a value metric's stored values per (variant, snapshot, day of
    first exposure): rows, and the exact integer sums ``s_i = sum v_i`` and ``p_ij = sum v_i
    v_j`` (i <= j) over the ``MetricValue`` rows of the cell. Rebuilt by the refresh for the
    days it touched, so the report sums a few thousand cells instead of millions of rows.
    Exact on PostgreSQL (numeric); on SQLite exact while a sum fits in 64 bits (~9.2e18
    hundredths squared), as the events path there.
    """

    metric = models.ForeignKey(Metric, on_delete=models.CASCADE, related_name="+", db_index=False)
    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    variant = models.ForeignKey(
        Variant, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    snapshot = models.ForeignKey(
        SegmentSnapshot, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    first_exposed_on = models.DateField()
    rows = models.BigIntegerField()
    s0, s1, s2, s3 = (_exact_sum(f"s{i}") for i in range(4))
    p00, p01, p02, p03, p11, p12, p13, p22, p23, p33 = (_exact_sum(f"p{i}{j}") for i in range(4) for j in range(i, 4))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["phase", "metric", "first_exposed_on", "variant", "snapshot"], name="metric_value_cell_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.metric_id}:{self.variant_id}:{self.snapshot_id}@{self.first_exposed_on}"
