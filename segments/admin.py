"""The segments admin: customers and their data, rule segments (with an audience preview),
dimensions (layer sizes, a distribution chart, the transition matrix, the MECE check) and
recompute runs (failures visible). Growth users edit; marketers view (permissions from
access.roles)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import flatten_fieldsets, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from segments.forms import DimensionForm, SegmentForm
from segments.models import (
    Customer,
    CustomerLayer,
    CustomerRole,
    CustomerTag,
    Dimension,
    Event,
    EventType,
    LayerHistory,
    Membership,
    RecomputeRun,
    Role,
    Segment,
    Tag,
)
from segments.selectors import dimension_last_run, dimension_layer_sizes
from segments.services.dimensions import dimension_sync_layers
from segments.services.segments import segment_preview


class CustomerTagInline(admin.TabularInline):
    model = CustomerTag
    extra = 0
    autocomplete_fields = ["tag"]


class CustomerRoleInline(admin.TabularInline):
    model = CustomerRole
    extra = 0
    fields = ["role", "since"]
    readonly_fields = ["since"]
    verbose_name = "role"


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


class CustomerLayerInline(admin.TabularInline):
    """The customer's current layers: computed, so read-only for everyone."""

    model = CustomerLayer
    extra = 0
    fields = ["dimension", "layer", "since", "valid_until", "computed_at"]
    readonly_fields = fields
    can_delete = False
    verbose_name = "current layer"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["external_id", "email", "signed_up_at", "timezone", "locale"]
    search_fields = ["=external_id", "email"]
    date_hierarchy = "signed_up_at"
    list_per_page = 50
    show_full_result_count = False
    readonly_fields = ["created_at", "updated_at"]
    inlines = [CustomerLayerInline, CustomerRoleInline, MembershipInline, CustomerTagInline]
    fieldsets = [
        (None, {"fields": ["external_id", "signed_up_at", "timezone", "locale", "attributes"]}),
        ("Email", {"fields": ["email", "email_consent_at", "email_opt_out_at"]}),
        ("SMS", {"fields": ["phone", "sms_consent_at", "sms_opt_out_at"]}),
        ("Push", {"fields": ["push_token", "push_consent_at", "push_opt_out_at"]}),
        ("Record", {"fields": ["created_at", "updated_at"]}),
    ]


@admin.register(EventType)
class EventTypeAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "is_monetary", "is_builtin"]
    search_fields = ["code", "name"]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        # Built-in types are referenced by code throughout the product.
        return ["code", "is_builtin"] if obj is not None and obj.is_builtin else ["is_builtin"]


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "customer", "event_type", "occurred_at", "amount", "currency"]
    list_filter = ["event_type"]
    search_fields = ["=event_id", "=customer__external_id"]
    list_select_related = ["customer", "event_type"]
    raw_id_fields = ["customer"]
    list_per_page = 50
    show_full_result_count = False


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["customer", "plan", "level", "started_at", "expires_at"]
    list_filter = ["plan", "level"]
    search_fields = ["=customer__external_id"]
    raw_id_fields = ["customer"]
    list_select_related = ["customer"]
    show_full_result_count = False


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "family", "source"]
    list_filter = ["family", "source"]
    search_fields = ["code", "name"]


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    """Sides of a two-sided platform; a dimension scoped to one layers only its holders."""

    list_display = ["key", "name"]
    search_fields = ["key", "name"]


def _status_badge(status: str) -> str:
    colour = {"succeeded": "#2e7d32", "failed": "#c62828", "running": "#1565c0"}.get(status, "#555")
    return format_html('<strong style="color: {}">{}</strong>', colour, status)


def _enqueue(request: HttpRequest, task: Any, ids: list[int], label: str) -> None:
    for pk in ids:
        transaction.on_commit(lambda pk=pk: task.delay(pk))
    messages.success(request, f"Recompute queued for {len(ids)} {label}; see Recompute runs for the outcome.")


# --- Segments ----------------------------------------------------------------------------


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    change_form_template = "admin/segments/segment/change_form.html"
    list_display = ["key", "name", "is_active", "size", "computed_at"]
    list_filter = ["is_active"]
    search_fields = ["key", "name"]
    readonly_fields = ["size", "computed_at", "created_by", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["key", "name", "description", "rule", "is_active"]}),
        ("Last recompute", {"fields": ["size", "computed_at", "created_by", "created_at", "updated_at"]}),
    ]
    actions = ["recompute_now"]

    def get_fieldsets(self, request: HttpRequest, obj: Segment | None = None) -> list[Any]:
        return self.fieldsets if obj is not None else self.fieldsets[:1]

    def get_readonly_fields(self, request: HttpRequest, obj: Segment | None = None) -> list[str]:
        # The key names the segment in recompute runs, APIs and other apps: stable once created.
        return ["key", *self.readonly_fields] if obj is not None else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Segment, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.action(description="Recompute selected segments now", permissions=["change"])
    def recompute_now(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        from segments.tasks import recompute_segment

        _enqueue(request, recompute_segment, list(queryset.values_list("pk", flat=True)), "segment(s)")

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if request.method == "POST" and "_preview" in request.POST:
            return self._preview_view(request, object_id, form_url)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _preview_view(self, request: HttpRequest, object_id: str | None, form_url: str) -> HttpResponse:
        """Validate the posted form and show the rule's audience size and a sample,
        re-rendering the form as posted; nothing is saved."""
        add = object_id is None
        obj = None if add else self.get_object(request, unquote(object_id))
        if not add and obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        allowed = self.has_add_permission(request) if add else self.has_change_permission(request, obj)
        if not allowed:
            raise PermissionDenied
        fieldsets = self.get_fieldsets(request, obj)
        form_class = self.get_form(request, obj, change=not add, fields=flatten_fieldsets(fieldsets))
        form = form_class(request.POST, request.FILES, instance=obj)
        preview = None
        if form.is_valid():
            try:
                preview = segment_preview(rule=form.cleaned_data["rule"])
            except ValidationError as exc:  # changed between validation and preview
                form.add_error("rule", exc.messages)
        admin_form = helpers.AdminForm(
            form,
            list(fieldsets),
            self.get_prepopulated_fields(request, obj),
            self.get_readonly_fields(request, obj),
            model_admin=self,
        )
        context = {
            **self.admin_site.each_context(request),
            "title": ("Add %s" if add else "Change %s") % self.opts.verbose_name,
            "subtitle": None if add else str(obj),
            "adminform": admin_form,
            "object_id": object_id,
            "original": obj,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            "segment_preview": preview,
        }
        return self.render_change_form(request, context, add=add, change=not add, obj=obj, form_url=form_url)


# --- Dimensions --------------------------------------------------------------------------


def _transition_matrix(transitions: list[list[Any]], layer_keys: list[str]) -> dict[str, Any]:
    """Rows: previous layer (or "(new)"); columns: new layer; cells: customers."""
    counts = {(src, dst): n for src, dst, n in transitions}
    sources = (["(new)"] if any(src is None for src, _, _ in transitions) else []) + layer_keys
    rows = []
    for src in sources:
        key = None if src == "(new)" else src
        cells = [counts.get((key, dst), 0) for dst in layer_keys]
        rows.append({"source": src, "cells": cells, "total": sum(cells)})
    return {"columns": layer_keys, "rows": rows}


@admin.register(Dimension)
class DimensionAdmin(admin.ModelAdmin):
    form = DimensionForm
    change_form_template = "admin/segments/dimension/change_form.html"
    list_display = ["key", "name", "kind", "role", "is_active", "computed_at", "last_run"]
    list_filter = ["kind", "role", "is_active"]
    search_fields = ["key", "name"]
    actions = ["recompute_now"]

    def get_readonly_fields(self, request: HttpRequest, obj: Dimension | None = None) -> list[str]:
        # The kind decides the layers; changing it would orphan every customer's layer.
        fields = ["computed_at"]
        return ["key", "kind", *fields] if obj is not None else fields

    def get_fields(self, request: HttpRequest, obj: Dimension | None = None) -> list[str]:
        return ["key", "name", "kind", "role", "config", "is_active", "computed_at"]

    @admin.display(description="Last run")
    def last_run(self, obj: Dimension) -> str:
        run = dimension_last_run(dimension_id=obj.pk, succeeded_only=False)
        if run is None:
            return "—"
        mece = "" if run.mece_ok is None else (" · MECE ok" if run.mece_ok else " · MECE VIOLATION")
        return format_html("{}{}", _status_badge(run.status), mece)

    def save_model(self, request: HttpRequest, obj: Dimension, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        dimension_sync_layers(dimension=obj)

    @admin.action(description="Recompute selected dimensions now", permissions=["change"])
    def recompute_now(self, request: HttpRequest, queryset: QuerySet[Dimension]) -> None:
        from segments.tasks import recompute_dimension

        _enqueue(request, recompute_dimension, list(queryset.values_list("pk", flat=True)), "dimension(s)")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        dimension = self.get_object(request, unquote(object_id))
        if dimension is not None:
            extra_context.update(self._distribution_context(dimension))
        return super().change_view(request, object_id, form_url, extra_context)

    @staticmethod
    def _distribution_context(dimension: Dimension) -> dict[str, Any]:
        sizes = dimension_layer_sizes(dimension_id=dimension.pk)
        total = sum(s.size for s in sizes)
        last_success = dimension_last_run(dimension_id=dimension.pk)
        last_any = dimension_last_run(dimension_id=dimension.pk, succeeded_only=False)
        details = last_success.details if last_success else {}
        keys = [s.key for s in sizes]
        return {
            "layer_rows": [
                {"key": s.key, "name": s.name, "size": s.size, "share": (100.0 * s.size / total) if total else 0.0}
                for s in sizes
            ],
            "layer_total": total,
            "chart_data": {"labels": [s.name for s in sizes], "keys": keys, "sizes": [s.size for s in sizes]},
            "transition_matrix": _transition_matrix(details.get("transitions", []), keys) if details else None,
            "last_success": last_success,
            "last_run": last_any,
            "mece": (last_any.details or {}).get("mece") if last_any else None,
            "recent_runs": RecomputeRun.objects.filter(target=f"dimension:{dimension.key}")[:10],
        }


# --- Recompute runs, current layers, history (records: read-only) -------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RecomputeRun)
class RecomputeRunAdmin(ReadOnlyAdmin):
    list_display = [
        "target",
        "status_badge",
        "trigger",
        "started_at",
        "duration_ms",
        "customers",
        "changed",
        "mece",
        "short_error",
    ]
    list_filter = ["status", "trigger", "mece_ok", "target"]
    search_fields = ["target", "error"]
    date_hierarchy = "started_at"
    list_per_page = 50
    fields = [
        "target",
        "status",
        "trigger",
        "as_of",
        "started_at",
        "finished_at",
        "duration_ms",
        "customers",
        "changed",
        "mece_ok",
        "error",
        "details",
    ]

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: RecomputeRun) -> str:
        return _status_badge(obj.status)

    @admin.display(description="MECE", ordering="mece_ok")
    def mece(self, obj: RecomputeRun) -> str:
        if obj.mece_ok is None:
            return "—"
        return "ok" if obj.mece_ok else format_html('<strong style="color: #c62828">VIOLATION</strong>')

    @admin.display(description="Error")
    def short_error(self, obj: RecomputeRun) -> str:
        return obj.error[:120]


@admin.register(CustomerLayer)
class CustomerLayerAdmin(ReadOnlyAdmin):
    list_display = ["customer", "dimension", "layer", "since", "valid_until", "computed_at"]
    list_filter = ["dimension", "layer"]
    search_fields = ["=customer__external_id"]
    list_select_related = ["customer", "dimension", "layer", "layer__dimension"]
    list_per_page = 50
    show_full_result_count = False


@admin.register(LayerHistory)
class LayerHistoryAdmin(ReadOnlyAdmin):
    list_display = ["customer", "dimension", "layer", "entered_at", "left_at"]
    list_filter = ["dimension", "layer"]
    search_fields = ["=customer__external_id"]
    list_select_related = ["customer", "dimension", "layer", "layer__dimension"]
    list_per_page = 50
    show_full_result_count = False
