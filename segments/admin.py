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
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from segments.forms import DimensionForm, SegmentForm, TagForm, TagRuleForm
from segments.models import (
    AnalyticsRun,
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
    TagHistory,
    TagRule,
)
from segments.selectors import dimension_last_run, dimension_layer_sizes
from segments.services import dimensions as dimension_services
from segments.services import segments as segment_services
from segments.services.segments import segment_preview
from segments.services.tags import (
    customer_tag_add,
    customer_tag_remove,
    tag_create,
    tag_rule_create,
    tag_rule_update,
)

SEGMENT_FIELDS = ("key", "name", "description", "rule", "is_active")
DIMENSION_FIELDS = ("key", "name", "kind", "role", "config", "is_active")
DIMENSION_UPDATABLE = ("name", "role", "config", "is_active")  # key and kind are read-only once created


def _adopt(obj: Any, created: Any) -> None:
    """Point the admin's unsaved form instance at the row the service created (the admin
    logs and redirects with ``obj``)."""
    obj.__dict__.update({k: v for k, v in created.__dict__.items() if k != "_state"})
    obj._state.adding = False
    obj._state.db = created._state.db


class CustomerTagInline(admin.TabularInline):
    """Tags the customer holds. Staff add and remove tags here by hand (recorded with who
    and when, through ``customer_tag_add`` / ``customer_tag_remove``); a computed tag
    removed here comes back at the next recompute if its rule still matches."""

    model = CustomerTag
    extra = 0
    autocomplete_fields = ["tag"]
    fields = ["tag", "source", "assigned_by", "assigned_at"]
    readonly_fields = ["source", "assigned_by", "assigned_at"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Rows are added or removed, never repointed (history is per tag).
        return False


class TagHistoryInline(admin.TabularInline):
    model = TagHistory
    extra = 0
    fields = ["tag", "source", "gained_at", "lost_at", "changed_by"]
    readonly_fields = fields
    can_delete = False
    ordering = ["-gained_at"]
    verbose_name = "tag history"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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
    inlines = [CustomerLayerInline, CustomerRoleInline, MembershipInline, CustomerTagInline, TagHistoryInline]
    fieldsets = [
        (None, {"fields": ["external_id", "signed_up_at", "timezone", "locale", "attributes"]}),
        ("Email", {"fields": ["email", "email_consent_at", "email_opt_out_at"]}),
        ("SMS", {"fields": ["phone", "sms_consent_at", "sms_opt_out_at"]}),
        ("Push", {"fields": ["push_token", "push_consent_at", "push_opt_out_at"]}),
        ("Record", {"fields": ["created_at", "updated_at"]}),
    ]

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not CustomerTag:
            super().save_formset(request, form, formset, change)
            return
        # Manual tags go through the service (who, when, history), never a bare save.
        customer = form.instance
        # The formset's change-message bookkeeping (what save() would have filled in).
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for inline_form in formset.forms:
            if not inline_form.has_changed() or inline_form.cleaned_data.get("DELETE"):
                continue
            if inline_form.instance.pk is None and inline_form.cleaned_data.get("tag"):
                row = customer_tag_add(customer=customer, tag=inline_form.cleaned_data["tag"], by=request.user)
                formset.new_objects.append(row)
        for deleted in formset.deleted_forms:
            if deleted.instance.pk is not None:
                customer_tag_remove(customer=customer, tag=deleted.instance.tag, by=request.user)
                formset.deleted_objects.append(deleted.instance)


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
    """Every tag; new ones here are manual (computed tags come from *Tag rules* and the
    dimensions). Codes are fixed once created: rules and segments name them."""

    form = TagForm
    list_display = ["code", "name", "family", "source"]
    list_filter = ["family", "source"]
    search_fields = ["code", "name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Tag | None = None) -> list[str]:
        if obj is None:
            return []
        if obj.source == Tag.Source.COMPUTED:
            return ["code", "family"]  # a tier tag stays tier; a tag rule's family is edited there
        return ["code"]

    def save_model(self, request: HttpRequest, obj: Tag, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        data = form.cleaned_data
        saved = tag_create(code=data["code"], name=data["name"], family=data["family"], description=data["description"])
        obj.pk = saved.pk


@admin.register(TagRule)
class TagRuleAdmin(admin.ModelAdmin):
    """Computed tags of the static, consumption and behaviour families; saved through
    ``tag_rule_create`` / ``tag_rule_update``, recomputed with the dimensions."""

    form = TagRuleForm
    list_display = ["code", "tag_name", "family", "is_active", "size", "computed_at"]
    list_filter = ["tag__family", "is_active"]
    search_fields = ["tag__code", "tag__name"]
    list_select_related = ["tag"]
    readonly_fields = ["size", "computed_at", "created_by", "created_at", "updated_at"]
    actions = ["recompute_now"]

    def get_fieldsets(self, request: HttpRequest, obj: TagRule | None = None) -> list[Any]:
        main = (None, {"fields": ["code", "name", "family", "description", "rule", "is_active"]})
        if obj is None:
            return [main]
        return [main, ("Last recompute", {"fields": self.readonly_fields})]

    @admin.display(description="Code", ordering="tag__code")
    def code(self, obj: TagRule) -> str:
        return obj.tag.code

    @admin.display(description="Name", ordering="tag__name")
    def tag_name(self, obj: TagRule) -> str:
        return obj.tag.name

    @admin.display(description="Family", ordering="tag__family")
    def family(self, obj: TagRule) -> str:
        return obj.tag.get_family_display()

    def save_model(self, request: HttpRequest, obj: TagRule, form: Any, change: bool) -> None:
        data = form.cleaned_data
        fields = {k: data[k] for k in ("name", "family", "description", "rule", "is_active")}
        if change:
            saved = tag_rule_update(tag_rule=obj, **fields)
        else:
            saved = tag_rule_create(code=data["code"], created_by=request.user, **fields)
        obj.pk, obj.tag = saved.pk, saved.tag

    @admin.action(description="Recompute selected tag rules now", permissions=["change"])
    def recompute_now(self, request: HttpRequest, queryset: QuerySet[TagRule]) -> None:
        from segments.tasks import recompute_tag_rule

        _enqueue(request, recompute_tag_rule, list(queryset.values_list("pk", flat=True)), "tag rule(s)")


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    """Sides of a two-sided platform; a dimension scoped to one layers only its holders."""

    list_display = ["key", "name", "holders"]
    search_fields = ["key", "name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Role]:
        # One GROUP BY for the page, not a count per row.
        return super().get_queryset(request).annotate(n_holders=Count("customer_roles"))

    @admin.display(description="Customers holding it", ordering="n_holders")
    def holders(self, obj: Role) -> int:
        return obj.n_holders  # type: ignore[attr-defined]


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
        """Through the one door (``segments.services.segments``), not ``obj.save()``."""
        data = {name: form.cleaned_data[name] for name in form.changed_data if name in SEGMENT_FIELDS}
        if change:
            segment_services.segment_update(segment=obj, **data)
            return
        created = segment_services.segment_create(
            **{name: form.cleaned_data[name] for name in SEGMENT_FIELDS}, created_by=request.user
        )
        _adopt(obj, created)

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
        """Through the one door (``segments.services.dimensions``): validation, layers and tags."""
        if change:
            data = {name: form.cleaned_data[name] for name in form.changed_data if name in DIMENSION_UPDATABLE}
            dimension_services.dimension_update(dimension=obj, **data)
            return
        created = dimension_services.dimension_create(**{name: form.cleaned_data[name] for name in DIMENSION_FIELDS})
        _adopt(obj, created)

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


@admin.register(TagHistory)
class TagHistoryAdmin(ReadOnlyAdmin):
    list_display = ["customer", "tag", "source", "gained_at", "lost_at", "changed_by"]
    list_filter = ["source", "tag__family", "tag"]
    search_fields = ["=customer__external_id", "=tag__code"]
    list_select_related = ["customer", "tag", "changed_by"]
    list_per_page = 50
    show_full_result_count = False


@admin.register(AnalyticsRun)
class AnalyticsRunAdmin(ReadOnlyAdmin):
    """Retention tables and funnels asked as a task (API ``?async=true``, the large-database
    admin pages): who asked, how long each waited and ran, failures visible. The stored
    result is not shown here (it can be large); the status URL or the page returns it."""

    list_display = ["kind", "status_badge", "owner", "created_at", "queued_seconds", "run_seconds", "short_error"]
    list_filter = ["status", "kind", "owner"]
    date_hierarchy = "created_at"
    list_per_page = 50
    fields = [
        "id",
        "kind",
        "status",
        "owner",
        "api_key",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "params",
        "spec",
        "error",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AnalyticsRun]:
        return super().get_queryset(request).defer("result")

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: AnalyticsRun) -> str:
        colour = {"done": "#2e7d32", "failed": "#c62828", "running": "#1565c0"}.get(obj.status, "#555")
        return format_html('<strong style="color: {}">{}</strong>', colour, obj.status)

    @admin.display(description="Queued (s)")
    def queued_seconds(self, obj: AnalyticsRun) -> str:
        return _seconds(obj.created_at, obj.started_at)

    @admin.display(description="Ran (s)")
    def run_seconds(self, obj: AnalyticsRun) -> str:
        return _seconds(obj.started_at, obj.finished_at)

    @admin.display(description="Error")
    def short_error(self, obj: AnalyticsRun) -> str:
        return obj.error[:120]


def _seconds(start: Any, end: Any) -> str:
    return "—" if start is None or end is None else f"{(end - start).total_seconds():.1f}"
