from __future__ import annotations

from django.contrib import admin

from segments.models import (
    Customer,
    CustomerLayer,
    CustomerTag,
    Dimension,
    Event,
    EventType,
    Layer,
    LayerHistory,
    Membership,
    RecomputeRun,
    Segment,
    Tag,
)


class CustomerTagInline(admin.TabularInline):
    model = CustomerTag
    extra = 0
    autocomplete_fields = ["tag"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["external_id", "email", "signed_up_at", "timezone", "locale"]
    search_fields = ["=external_id", "email"]
    date_hierarchy = "signed_up_at"
    list_per_page = 50
    show_full_result_count = False
    readonly_fields = ["created_at", "updated_at"]
    inlines = [MembershipInline, CustomerTagInline]
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


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "is_active", "size", "computed_at"]
    search_fields = ["key", "name"]


class LayerInline(admin.TabularInline):
    model = Layer
    extra = 0


@admin.register(Dimension)
class DimensionAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "kind", "is_active", "computed_at"]
    inlines = [LayerInline]


@admin.register(RecomputeRun)
class RecomputeRunAdmin(admin.ModelAdmin):
    list_display = ["target", "status", "started_at", "duration_ms", "customers", "changed"]
    list_filter = ["status", "target"]


admin.site.register([CustomerLayer, LayerHistory], admin.ModelAdmin)
