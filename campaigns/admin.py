"""The growth team's campaign console: build campaigns of each kind, preview content for a
customer, launch/pause/resume/finish (permission ``campaigns.launch_campaign``), and watch
deliveries (counts by status, failures with reasons, the demo mailbox)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from campaigns import selectors
from campaigns.forms import CampaignForm, ContentForm, CouponPoolForm, PreviewForm, SuppressionImportForm
from campaigns.models import (
    Campaign,
    ChannelPolicy,
    Content,
    Coupon,
    Delivery,
    MailboxMessage,
    Offer,
    Recipient,
    Referral,
    ReferralAudit,
    ReferralCode,
    Suppression,
    TopicOptOut,
    Treatment,
)
from campaigns.services import lifecycle, suppression
from campaigns.services.offers import coupon_pool_upload
from campaigns.services.render import content_preview
from segments.models import Customer

LAUNCH_PERM = "campaigns.launch_campaign"


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TreatmentInline(admin.TabularInline):
    model = Treatment
    extra = 0
    fields = ["variant_key", "layer", "referral_role", "offer"]
    autocomplete_fields = ["offer"]
    show_change_link = True


def _transition(action: str, label: str):  # type: ignore[no-untyped-def]
    service = getattr(lifecycle, f"campaign_{action}")

    @admin.action(description=f"{label} selected campaigns", permissions=["launch"])
    def run(modeladmin: CampaignAdmin, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        done = 0
        for campaign in queryset:
            try:
                service(campaign=campaign)
            except ValidationError as exc:
                modeladmin.message_user(request, f"{campaign.key}: {'; '.join(exc.messages)}", messages.ERROR)
            else:
                done += 1
        if done:
            modeladmin.message_user(request, f"{label}: {done} campaign(s).", messages.SUCCESS)

    run.__name__ = action
    return run


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = ["key", "name", "kind", "status", "trigger", "send_at", "started_at", "deliveries_link"]
    list_filter = ["kind", "status", "trigger"]
    search_fields = ["key", "name"]
    readonly_fields = [
        "status",
        "created_at",
        "scheduled_at",
        "started_at",
        "paused_at",
        "finished_at",
        "audience_resolved_at",
        "trigger_cursor",
        "delivery_summary",
    ]
    filter_horizontal = ["include_segments", "exclude_segments", "include_layers", "exclude_layers"]
    raw_id_fields = ["experiment"]
    inlines = [TreatmentInline]
    actions = [
        _transition("schedule", "Schedule"),
        _transition("launch", "Launch"),
        _transition("pause", "Pause"),
        _transition("resume", "Resume"),
        _transition("finish", "Finish"),
    ]
    change_form_template = "admin/campaigns/campaign/change_form.html"
    fieldsets = [
        (None, {"fields": ["key", "name", "kind", "description", "status"]}),
        (
            "Audience",
            {
                "fields": [
                    "include_segments",
                    "exclude_segments",
                    "include_layers",
                    "exclude_layers",
                    "split_dimension",
                    "experiment",
                ],
                "description": "Segments and layers (OR within a dimension, AND across). The experiment splits the "
                "audience into variants; its control gets no message unless a treatment names it.",
            },
        ),
        (
            "Trigger and schedule",
            {
                "fields": [
                    "trigger",
                    "trigger_event_type",
                    "trigger_layer",
                    "trigger_within_hours",
                    "send_at",
                    "ends_at",
                ]
            },
        ),
        ("Channels", {"fields": ["channels", "channel_strategy", "is_transactional", "topic", "max_attempts"]}),
        (
            "Referral rewards",
            {
                "classes": ["collapse"],
                "fields": ["referral_reward_to", "referral_qualifying_event_type", "referral_cap_per_inviter"],
            },
        ),
        (
            "Progress",
            {
                "fields": [
                    "delivery_summary",
                    "created_at",
                    "scheduled_at",
                    "started_at",
                    "paused_at",
                    "finished_at",
                    "audience_resolved_at",
                    "trigger_cursor",
                ]
            },
        ),
    ]

    def has_launch_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(LAUNCH_PERM)

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="Deliveries")
    def deliveries_link(self, obj: Campaign) -> str:
        url = reverse("admin:campaigns_delivery_changelist") + f"?campaign__id__exact={obj.pk}"
        return format_html('<a href="{}">deliveries</a>', url)

    @admin.display(description="Deliveries by status")
    def delivery_summary(self, obj: Campaign) -> str:
        if obj.pk is None:
            return "—"
        base = reverse("admin:campaigns_delivery_changelist") + f"?campaign__id__exact={obj.pk}"
        counts = selectors.delivery_counts(campaign=obj)
        reasons = selectors.suppression_counts(campaign=obj)
        recipients = selectors.recipient_counts(campaign=obj)
        status_rows = format_html_join(
            "",
            '<tr><td><a href="{}&status__exact={}">{}</a></td><td>{}</td></tr>',
            ((base, status, status, n) for status, n in sorted(counts.items())),
        )
        reason_rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td></tr>",
            sorted(reasons.items()),
        )
        recipient_rows = format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", sorted(recipients.items()))
        return format_html(
            "<table><tr><th>status</th><th>n</th></tr>{}</table>"
            "<table><tr><th>suppressed / failed by reason</th><th>n</th></tr>{}</table>"
            "<table><tr><th>decisions (outcome:variant)</th><th>n</th></tr>{}</table>",
            status_rows or mark_safe("<tr><td colspan=2>none yet</td></tr>"),
            reason_rows or mark_safe("<tr><td colspan=2>none</td></tr>"),
            recipient_rows or mark_safe("<tr><td colspan=2>none</td></tr>"),
        )

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/preview/", wrap(self.preview_view), name="campaigns_campaign_preview"),
            path(
                "<int:pk>/transition/<str:action>/",
                wrap(require_POST(self.transition_view)),
                name="campaigns_campaign_transition",
            ),
            *super().get_urls(),
        ]

    def transition_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        if not self.has_launch_permission(request) or action not in lifecycle.TRANSITIONS:
            raise PermissionDenied
        campaign = get_object_or_404(Campaign, pk=pk)
        try:
            getattr(lifecycle, f"campaign_{action}")(campaign=campaign)
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), messages.ERROR)
        else:
            self.message_user(request, f"Campaign {campaign.key}: {action} done.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[pk]))

    def preview_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_view_permission(request, campaign):
            raise PermissionDenied
        form = PreviewForm(request.GET or None, campaign=campaign)
        preview = None
        if form.is_valid():
            customer = Customer.objects.filter(external_id=form.cleaned_data["customer"]).first()
            if customer is None:
                form.add_error("customer", "No customer with this external id.")
            else:
                try:
                    preview = content_preview(content=form.cleaned_data["content"], customer=customer)
                except ValidationError as exc:
                    form.add_error(None, exc)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": campaign,
            "title": f"Preview: {campaign.name}",
            "form": form,
            "preview": preview,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/preview.html", context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None):  # type: ignore[no-untyped-def]
        extra_context = extra_context or {}
        extra_context["can_launch"] = self.has_launch_permission(request)
        extra_context["transitions"] = list(lifecycle.TRANSITIONS)
        return super().change_view(request, object_id, form_url, extra_context=extra_context)


class ContentInline(admin.StackedInline):
    model = Content
    form = ContentForm
    extra = 0


@admin.register(Treatment)
class TreatmentAdmin(admin.ModelAdmin):
    list_display = ["__str__", "campaign", "variant_key", "layer", "referral_role", "offer"]
    list_filter = ["campaign"]
    autocomplete_fields = ["offer"]
    inlines = [ContentInline]
    list_select_related = ["campaign", "layer__dimension", "offer"]


@admin.register(Offer)
class OfferAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "benefit_kind", "value", "currency", "code_source", "valid_until", "validity_days"]
    list_filter = ["benefit_kind", "code_source"]
    search_fields = ["key", "name"]
    change_form_template = "admin/campaigns/offer/change_form.html"

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:pk>/upload-codes/",
                self.admin_site.admin_view(self.upload_view),
                name="campaigns_offer_upload_codes",
            ),
            *super().get_urls(),
        ]

    def upload_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        offer = get_object_or_404(Offer, pk=pk)
        if not self.has_change_permission(request, offer):
            raise PermissionDenied
        form = CouponPoolForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                added, skipped = coupon_pool_upload(offer=offer, codes=form.cleaned_data["lines"])
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                self.message_user(request, f"Added {added} code(s) to the pool; {skipped} already present.")
                return HttpResponseRedirect(reverse("admin:campaigns_offer_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": offer,
            "title": f"Upload codes: {offer.name}",
            "form": form,
            "pool_free": Coupon.objects.filter(offer=offer, customer__isnull=True).count(),
        }
        return TemplateResponse(request, "admin/campaigns/offer/upload_codes.html", context)


@admin.register(Coupon)
class CouponAdmin(ReadOnlyAdmin):
    list_display = ["code", "offer", "customer", "campaign", "issued_at", "expires_at", "redeemed_at"]
    list_filter = ["offer", "source", ("redeemed_at", admin.EmptyFieldListFilter)]
    search_fields = ["=code", "=customer__external_id"]
    list_select_related = ["offer", "customer", "campaign"]
    show_full_result_count = False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "key",
        "campaign",
        "customer",
        "channel",
        "status",
        "reason",
        "tries",
        "not_before",
        "sent_at",
        "last_error_short",
    ]
    list_filter = ["status", "channel", "reason", "campaign"]
    search_fields = ["=key", "=customer__external_id"]
    list_select_related = ["campaign", "customer"]
    show_full_result_count = False
    list_per_page = 100

    @admin.display(description="tries")
    def tries(self, obj: Delivery) -> str:
        return f"{obj.attempts}/{obj.max_attempts}"

    @admin.display(description="last error")
    def last_error_short(self, obj: Delivery) -> str:
        return obj.last_error[:120]


@admin.register(Recipient)
class RecipientAdmin(ReadOnlyAdmin):
    list_display = ["campaign", "customer", "step", "outcome", "reason", "variant_key", "layer", "offer", "decided_at"]
    list_filter = ["outcome", "campaign"]
    search_fields = ["=customer__external_id"]
    list_select_related = ["campaign", "customer", "layer__dimension", "offer"]
    show_full_result_count = False


@admin.register(ChannelPolicy)
class ChannelPolicyAdmin(admin.ModelAdmin):
    list_display = ["channel", "daily_cap", "weekly_cap", "quiet_start", "quiet_end", "rate_per_second"]


@admin.register(ReferralCode)
class ReferralCodeAdmin(ReadOnlyAdmin):
    list_display = ["code", "customer", "rewarded_count", "created_at"]
    search_fields = ["=code", "=customer__external_id"]
    list_select_related = ["customer"]


@admin.register(Referral)
class ReferralAdmin(ReadOnlyAdmin):
    list_display = ["campaign", "inviter", "invitee", "status", "reason", "attributed_at", "qualified_at"]
    list_filter = ["status", "campaign"]
    search_fields = ["=inviter__external_id", "=invitee__external_id"]
    list_select_related = ["campaign", "inviter", "invitee"]


@admin.register(ReferralAudit)
class ReferralAuditAdmin(ReadOnlyAdmin):
    list_display = ["at", "campaign", "customer", "action", "event_id", "detail"]
    list_filter = ["action", "campaign"]
    search_fields = ["=customer__external_id"]
    list_select_related = ["campaign", "customer"]


@admin.register(MailboxMessage)
class MailboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "channel", "to", "subject", "delivery_key"]
    list_filter = ["channel"]
    search_fields = ["to", "subject", "=delivery_key"]
    fields = ["received_at", "channel", "from_email", "to", "subject", "body_text", "html_rendered", "headers"]
    readonly_fields = fields

    @admin.display(description="HTML")
    def html_rendered(self, obj: MailboxMessage) -> str:
        if not obj.body_html:
            return "—"
        # Shown in a sandboxed frame: the message's HTML cannot run scripts or reach the admin.
        return format_html(
            '<iframe sandbox="" srcdoc="{}" style="width:100%;height:400px;border:1px solid #ccc"></iframe>',
            obj.body_html,
        )


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """Contact points never written to again. Add one by hand, import a CSV
    (``channel,address,reason[,detail]``; errors are listed with their line numbers and
    nothing is imported then) or export them all."""

    list_display = ["address", "channel", "reason", "source", "created_at"]
    list_filter = ["channel", "reason", "source"]
    search_fields = ["address"]
    date_hierarchy = "created_at"
    fields = ["channel", "address", "reason", "detail", "source", "created_at"]
    readonly_fields = ["source", "created_at"]
    change_list_template = "admin/campaigns/suppression/change_list.html"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        try:
            suppression.suppression_add(
                channel=obj.channel, address=obj.address, reason=obj.reason, detail=obj.detail, source="admin"
            )
        except ValueError as exc:
            self.message_user(request, str(exc), level=messages.ERROR)

    def get_urls(self) -> list[Any]:
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="campaigns_suppression_import"),
            path("export/", self.admin_site.admin_view(self.export_view), name="campaigns_suppression_export"),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = SuppressionImportForm(request.POST or None, request.FILES or None)
        errors: tuple[tuple[int, str], ...] = ()
        if request.method == "POST" and form.is_valid():
            result = suppression.suppressions_import(text=form.cleaned_data["text"])
            if not result.errors:
                self.message_user(request, f"Imported {result.added} new suppression(s).")
                return HttpResponseRedirect(reverse("admin:campaigns_suppression_changelist"))
            errors = result.errors
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import suppressions",
            "form": form,
            "errors": errors,
        }
        return TemplateResponse(request, "admin/campaigns/suppression/import.html", context)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        response = HttpResponse(suppression.suppressions_export(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="suppressions.csv"'
        return response


@admin.register(TopicOptOut)
class TopicOptOutAdmin(ReadOnlyAdmin):
    list_display = ["customer", "channel", "topic", "opted_out", "changed_at", "source"]
    list_filter = ["channel", "topic", "opted_out"]
    search_fields = ["customer__external_id"]
    raw_id_fields = ["customer"]
