"""The experiments admin: the experiment editor (inline variants and metrics, targeting,
namespace and holdout), status transitions, the allocation / new-phase flow, live counts.

- Transitions (start, pause, resume, stop) are buttons on the change form and list
  actions; both need ``experiments.change_experiment_status`` and call the services.
- Once an experiment has started, its assignment-affecting fields (coverage, targeting,
  namespace, holdout, variant keys/weights/control) are read-only in the editor; they change
  through "Change allocation / new phase", which calls ``experiment_allocation_update``.
- Assignments, holdout members, conversions and snapshots are read-only lists.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from experiments import services
from experiments.forms import AllocationForm, AllocationVariantFormSet, ExperimentAdminForm, VariantInlineFormSet
from experiments.models import (
    Assignment,
    Conversion,
    Experiment,
    Holdout,
    HoldoutMember,
    Metric,
    Namespace,
    Phase,
    SegmentSnapshot,
    Variant,
)
from experiments.reports.views import owner_url
from experiments.selectors import experiment_current_phase, variant_counts
from experiments.services.lifecycle import TRANSITIONS, Targeting

STATUS_PERMISSION = "experiments.change_experiment_status"


class ReadOnlyAdminMixin:
    """Rows written only by the engine: listed and viewed, never edited here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VariantInline(admin.TabularInline):
    model = Variant
    formset = VariantInlineFormSet
    extra = 0
    min_num = 2
    fields = ["position", "key", "name", "weight", "is_control", "payload", "is_active"]
    readonly_fields = ["is_active"]
    ordering = ["position", "pk"]

    def get_readonly_fields(self, request: HttpRequest, obj: Experiment | None = None) -> list[str]:
        if obj is not None and obj.status != Experiment.Status.DRAFT:
            return ["position", "key", "weight", "is_control", "is_active"]
        return list(super().get_readonly_fields(request, obj))

    def has_add_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        started = obj is not None and obj.status != Experiment.Status.DRAFT
        return not started and super().has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        started = obj is not None and obj.status != Experiment.Status.DRAFT
        return not started and super().has_delete_permission(request, obj)


class MetricInline(admin.TabularInline):
    model = Metric
    extra = 0
    fields = [
        "role",
        "event_type",
        "kind",
        "refund_event_type",
        "numerator_part",
        "denominator_event_type",
        "denominator_part",
        "window_hours",
        "cap_percentile",
        "cuped_lookback_days",
        "noninferiority_margin",
        "conversions_watermark",
    ]
    readonly_fields = ["conversions_watermark"]

    def get_readonly_fields(self, request: HttpRequest, obj: Experiment | None = None) -> list[str]:
        # The metrics and margins are part of the analysis plan recorded at start.
        if obj is not None and obj.status != Experiment.Status.DRAFT:
            return list(self.fields)
        return list(super().get_readonly_fields(request, obj))


class PhaseInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Phase
    extra = 0
    fields = ["number", "started_at", "ended_at", "coverage", "allocation", "reason"]
    readonly_fields = fields

    @admin.display(description="weights")
    def allocation(self, phase: Phase) -> str:
        return ", ".join(f"{w['variant']} {Decimal(w['weight']) * 100:.2f}%" for w in phase.weights)


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentAdminForm
    change_form_template = "admin/experiments/experiment/change_form.html"
    list_display = ["key", "name", "status", "coverage", "namespace", "holdout", "started_at", "stopped_at"]
    list_filter = ["status", "namespace", "holdout"]
    search_fields = ["key", "name", "hypothesis"]
    list_select_related = ["namespace", "holdout"]
    list_per_page = 50
    filter_horizontal = ["include_segments", "exclude_segments", "include_layers", "exclude_layers"]
    inlines = [VariantInline, MetricInline, PhaseInline]
    actions = ["start_selected", "pause_selected", "resume_selected", "stop_selected"]
    fieldsets = [
        (None, {"fields": ["key", "name", "hypothesis", "owner", "minimum_detectable_effect"]}),
        ("Status", {"fields": ["status", "started_at", "stopped_at", "live_counts"]}),
        ("Traffic", {"fields": ["coverage"]}),
        (
            "Targeting",
            {
                "fields": ["include_segments", "exclude_segments", "include_layers", "exclude_layers"],
                "description": "Segments: in any included, in no excluded. Layers: per dimension, in one of "
                "its included layers; in no excluded layer.",
            },
        ),
        (
            "Mutual exclusion and holdout",
            {"fields": ["namespace", "namespace_start", "namespace_end", "holdout"]},
        ),
        (
            "Analysis plan",
            {
                "fields": [
                    "inference_mode",
                    "planned_sample_size",
                    "planned_end_at",
                    "fixed_audience",
                    "alpha",
                    "correction",
                    "confirmatory_dimensions",
                ],
                "description": "Recorded when the experiment starts (with the metrics and their guardrail "
                "margins) and shown on the report. It cannot change while the experiment runs: a changed plan "
                "needs a new phase.",
            },
        ),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Experiment | None = None) -> list[str]:
        fields = ["status", "started_at", "stopped_at", "live_counts"]
        if obj is not None and obj.status != Experiment.Status.DRAFT:
            fields += ["key", *Experiment.ASSIGNMENT_FIELDS, *Experiment.PLAN_FIELDS]
        return fields

    def has_change_status_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(STATUS_PERMISSION)

    @admin.display(description="Assigned and exposed (current phase)")
    def live_counts(self, experiment: Experiment) -> str:
        if experiment.pk is None:
            return "-"
        phase = experiment_current_phase(experiment=experiment)
        if phase is None:
            return "Not started."
        rows = format_html_join(
            "",
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (c.variant_key, " (control)" if c.is_control else "", c.assigned, c.exposed, c.conflicting)
                for c in variant_counts(experiment=experiment, phase=phase)
            ),
        )
        return format_html(
            '<table class="experiment-live-counts"><caption>Phase {} (seed fixed at start)</caption>'
            "<tr><th>variant</th><th>assigned</th><th>exposed</th><th>conflicting exposure</th></tr>{}</table>",
            phase.number,
            rows,
        )

    # --- Transitions ------------------------------------------------------------------

    def _transition(self, request: HttpRequest, experiment: Experiment, action: str) -> bool:
        service = TRANSITIONS[action][0]
        try:
            service(experiment=experiment)
        except ValidationError as exc:
            self.message_user(request, f"{experiment.key}: {'; '.join(exc.messages)}", messages.ERROR)
            return False
        return True

    def _bulk_transition(self, request: HttpRequest, queryset: QuerySet[Experiment], action: str) -> None:
        done = [e.key for e in queryset.order_by("key") if self._transition(request, e, action)]
        if done:
            self.message_user(request, f"{action.capitalize()}: {', '.join(done)}.", messages.SUCCESS)

    @admin.action(description="Start selected experiments", permissions=["change_status"])
    def start_selected(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._bulk_transition(request, queryset, "start")

    @admin.action(description="Pause selected experiments", permissions=["change_status"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._bulk_transition(request, queryset, "pause")

    @admin.action(description="Resume selected experiments", permissions=["change_status"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._bulk_transition(request, queryset, "resume")

    @admin.action(description="Stop selected experiments", permissions=["change_status"])
    def stop_selected(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._bulk_transition(request, queryset, "stop")

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/transition/<str:action>/",
                wrap(require_POST(self.transition_view)),
                name="experiments_experiment_transition",
            ),
            path("<int:pk>/allocation/", wrap(self.allocation_view), name="experiments_experiment_allocation"),
            *super().get_urls(),
        ]

    def transition_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        if not self.has_change_status_permission(request) or action not in TRANSITIONS:
            raise PermissionDenied
        experiment = get_object_or_404(Experiment, pk=pk)
        if self._transition(request, experiment, action):
            self.message_user(request, f"Experiment {experiment.key}: {action} done.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:experiments_experiment_change", args=[pk]))

    def allocation_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Coverage and variants; within a phase only raising coverage and re-weighting;
        anything else with "start new phase" (which also needs the status permission)."""
        experiment = get_object_or_404(Experiment, pk=pk)
        if not self.has_change_permission(request, experiment):
            raise PermissionDenied
        initial_variants = [
            {"key": v.key, "name": v.name, "weight": v.weight, "payload": v.payload, "is_control": v.is_control}
            for v in experiment.variants.filter(is_active=True).order_by("position", "pk")
        ]
        if request.method == "POST":
            form = AllocationForm(request.POST)
            formset = AllocationVariantFormSet(request.POST, prefix="variants")
            if form.is_valid() and formset.is_valid():
                new_phase = form.cleaned_data["start_new_phase"]
                if new_phase and not self.has_change_status_permission(request):
                    raise PermissionDenied
                try:
                    services.experiment_allocation_update(
                        experiment=experiment,
                        coverage=form.cleaned_data["coverage"],
                        variants=formset.specs(),
                        targeting=Targeting.of(experiment),
                        start_new_phase=new_phase,
                        reason=form.cleaned_data["reason"],
                    )
                except ValidationError as exc:
                    for field, errors in exc.message_dict.items():
                        form.add_error(field if field in form.fields else None, errors)
                else:
                    done = "New phase started" if new_phase else "Allocation updated"
                    self.message_user(request, f"{experiment.key}: {done}.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:experiments_experiment_change", args=[pk]))
        else:
            form = AllocationForm(initial={"coverage": experiment.coverage})
            formset = AllocationVariantFormSet(initial=initial_variants, prefix="variants")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": experiment,
            "title": f"Change allocation: {experiment.name}",
            "form": form,
            "formset": formset,
            "phase": experiment_current_phase(experiment=experiment),
            "can_change_status": self.has_change_status_permission(request),
        }
        return TemplateResponse(request, "admin/experiments/experiment/allocation.html", context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None):  # type: ignore[no-untyped-def]
        extra_context = extra_context or {}
        experiment = self.get_object(request, object_id)
        can_status = self.has_change_status_permission(request)
        extra_context["transitions"] = [
            action
            for action, (_, statuses) in TRANSITIONS.items()
            if can_status and experiment is not None and experiment.status in statuses
        ]
        extra_context["can_change_allocation"] = (
            experiment is not None
            and experiment.status != Experiment.Status.STOPPED
            and self.has_change_permission(request, experiment)
        )
        extra_context["owner_url"] = owner_url(experiment.managed_by) if experiment is not None else ""
        return super().change_view(request, object_id, form_url, extra_context=extra_context)


@admin.register(Namespace)
class NamespaceAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "ranges"]
    search_fields = ["key", "name"]

    @admin.display(description="Running and paused experiments")
    def ranges(self, namespace: Namespace) -> str:
        rows = Experiment.objects.active().filter(namespace=namespace).order_by("namespace_start")
        return ", ".join(f"{e.key} [{e.namespace_start}, {e.namespace_end})" for e in rows) or "-"


@admin.register(Holdout)
class HoldoutAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "percent", "is_active", "created_at"]
    readonly_fields = ["seed", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Holdout | None = None) -> list[str]:
        return [*self.readonly_fields, "key"] if obj is not None else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Holdout, form: Any, change: bool) -> None:
        if not change:
            obj.seed = services.holdout_seed_for(obj.key)
        super().save_model(request, obj, form, change)


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "experiment",
        "phase",
        "customer",
        "variant",
        "assigned_at",
        "first_exposed_at",
        "exposure_count",
        "conflicting_exposure",
    ]
    list_filter = ["experiment", "conflicting_exposure"]
    list_select_related = ["experiment", "phase__experiment", "customer", "variant__experiment"]
    search_fields = ["customer__external_id"]
    raw_id_fields = ["customer"]
    list_per_page = 100
    show_full_result_count = False


@admin.register(HoldoutMember)
class HoldoutMemberAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "holdout", "experiment", "phase", "customer", "held_out_at"]
    list_filter = ["holdout", "experiment"]
    list_select_related = ["holdout", "experiment", "phase__experiment", "customer"]
    search_fields = ["customer__external_id"]
    list_per_page = 100
    show_full_result_count = False


@admin.register(Conversion)
class ConversionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "assignment", "metric", "variant", "converted_at"]
    list_filter = ["metric__experiment"]
    list_select_related = ["metric__experiment", "metric__event_type", "variant__experiment"]
    raw_id_fields = ["assignment"]
    list_per_page = 100
    show_full_result_count = False


@admin.register(SegmentSnapshot)
class SegmentSnapshotAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "key", "created_at"]
    search_fields = ["key"]
    list_per_page = 100
