"""The growth team's campaign console: build campaigns of each kind, preview content for a
customer, launch/pause/resume/finish (permission ``campaigns.launch_campaign``), and watch
deliveries (counts by status, failures with reasons, the demo mailbox)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from campaigns import builder, selectors
from campaigns.forms import CampaignForm, ContentForm, CouponPoolForm, PreviewForm, SuppressionImportForm
from campaigns.models import (
    Campaign,
    CampaignVersion,
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
from campaigns.services import configure, editing, lifecycle, suppression
from campaigns.services.offers import coupon_pool_upload
from campaigns.services.render import content_preview
from config.replica import replica_reads
from segments.selectors import customer_get

LAUNCH_PERM = "campaigns.launch_campaign"
NEW_VERSION_PARAM = "new_version"


def _new_version_mode(request: HttpRequest) -> bool:
    """The change form was opened with 'Edit as a new version' (the form posts back to the
    same URL, so the mode survives the submit)."""
    return request.GET.get(NEW_VERSION_PARAM) == "1"


def _apply_new_version(modeladmin: admin.ModelAdmin, request: HttpRequest, campaign: Campaign, apply: Any) -> bool:
    """Run ``apply()`` inside a new version of ``campaign`` (snapshot + new experiment phase),
    all or nothing: a result that fails the launch checks is rolled back and reported."""
    try:
        with transaction.atomic():
            editing.campaign_version_start(campaign=campaign, user=request.user)
            apply()
            lifecycle.campaign_validate(campaign=Campaign.objects.get(pk=campaign.pk))
    except ValidationError as exc:
        modeladmin.message_user(request, f"New version not saved: {'; '.join(exc.messages)}", messages.ERROR)
        request._new_version_failed = True  # type: ignore[attr-defined]
        return False
    modeladmin.message_user(
        request,
        f"Campaign {campaign.key}: version {Campaign.objects.get(pk=campaign.pk).version} in force; the previous "
        "configuration is kept and the experiment started a new phase.",
        messages.SUCCESS,
    )
    return True


def _unsaved(formsets: Any) -> None:
    """Formsets a refused or empty new version did not save still feed the admin's change
    message, which reads what they saved."""
    for formset in formsets:
        for name in ("new_objects", "changed_objects", "deleted_objects"):
            if not hasattr(formset, name):
                setattr(formset, name, [])


def _locked_for(request: HttpRequest, campaign: Campaign | None) -> bool:
    return campaign is not None and campaign.pk is not None and campaign.is_locked and not _new_version_mode(request)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TreatmentFormSet(BaseInlineFormSet):
    """A row added and left blank would be an "any variant × any layer" treatment with no
    offer; Django drops an unchanged extra row without a word, so the author believed it
    saved. Refused instead, with what to do."""

    def clean(self) -> None:
        super().clean()
        for form in self.extra_forms:
            if not form.has_changed() and not self._should_delete_form(form):
                # The rule is the service's (an unchanged extra row is blank by definition).
                try:
                    configure.treatment_row_check(variant_key="", layer=None, offer=None)
                except ValidationError as exc:
                    raise ValidationError(exc.message_dict["treatments"]) from exc


class TreatmentInline(admin.TabularInline):
    model = Treatment
    formset = TreatmentFormSet
    extra = 0
    fields = ["variant_key", "layer", "referral_role", "offer"]
    autocomplete_fields = ["offer"]
    show_change_link = True

    # Once scheduled, treatments change only in a new version (campaigns.services.editing).
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not _locked_for(request, obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not _locked_for(request, obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not _locked_for(request, obj) and super().has_delete_permission(request, obj)


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
        "version",
        "version_history",
    ]
    filter_horizontal = ["include_segments", "exclude_segments", "include_layers", "exclude_layers"]
    raw_id_fields = ["experiment"]
    inlines = [TreatmentInline]
    actions = [
        "duplicate_as_draft",
        _transition("schedule", "Schedule"),
        _transition("launch", "Launch"),
        _transition("pause", "Pause"),
        _transition("resume", "Resume"),
        _transition("finish", "Finish"),
    ]
    change_form_template = "admin/campaigns/campaign/change_form.html"
    change_list_template = "admin/campaigns/campaign/change_list.html"
    fieldsets = [
        (None, {"fields": ["key", "name", "kind", "description", "status", "version"]}),
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
                    "version_history",
                ]
            },
        ),
    ]

    def has_launch_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(LAUNCH_PERM)

    # Only drafts are deleted (campaigns.services.editing.campaign_delete): a live or finished
    # campaign's recipients and deliveries are the record of what was sent.
    def has_delete_permission(self, request: HttpRequest, obj: Campaign | None = None) -> bool:
        return (obj is None or not obj.is_locked) and super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Campaign) -> None:
        editing.campaign_delete(campaign=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            try:
                editing.campaign_delete(campaign=campaign)
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.ERROR)

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.pk is not None and obj.is_locked:
            locked = editing.LOCKED_FIELDS if not _new_version_mode(request) else editing.NEVER_CHANGED_ONCE_LIVE
            fields += [name for name in locked if name not in fields]
        return fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):  # type: ignore[no-untyped-def]
        form = super().get_form(request, obj, change=change, **kwargs)
        form.new_version = _new_version_mode(request)
        return form

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        if not change:
            # One door: the service creates it (its rules already ran in the form's clean).
            config = {name: form.cleaned_data[name] for name in configure.CONFIG_FIELDS if name in form.cleaned_data}
            created = configure.campaign_create(
                key=obj.key, name=obj.name, kind=obj.kind, config=config, created_by=request.user
            )
            obj.pk, obj.created_by, obj._state.adding = created.pk, created.created_by, False
            return
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data}
        stored = Campaign.objects.get(pk=obj.pk)
        if stored.is_locked and _new_version_mode(request):
            request._campaign_changes = changes  # type: ignore[attr-defined]  # applied with the inlines
            return
        editing.campaign_update(campaign=stored, changes=changes)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        changes = getattr(request, "_campaign_changes", None)
        if changes is None:
            if change and any(fs.has_changed() for fs in formsets):
                editing.treatments_write_check(campaign=form.instance)
            super().save_related(request, form, formsets, change)
            return
        if not changes and not any(fs.has_changed() for fs in formsets):
            self.message_user(request, "Nothing changed: no new version.", messages.INFO)
            _unsaved(formsets)
            return

        def apply() -> None:
            editing.campaign_update(campaign=form.instance, changes=changes, new_version=True, version_started=True)
            for formset in formsets:
                self.save_formset(request, form, formset, change=change)

        _apply_new_version(self, request, form.instance, apply)
        _unsaved(formsets)

    def response_change(self, request: HttpRequest, obj: Campaign) -> HttpResponse:
        if getattr(request, "_new_version_failed", False) or getattr(request, "_campaign_changes", None) is not None:
            query = f"?{NEW_VERSION_PARAM}=1" if getattr(request, "_new_version_failed", False) else ""
            return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[obj.pk]) + query)
        return super().response_change(request, obj)

    @admin.display(description="Earlier versions")
    def version_history(self, obj: Campaign) -> str:
        if obj.pk is None:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    v.number,
                    v.experiment_phase or "—",
                    v.replaced_at.strftime("%Y-%m-%d %H:%M"),
                    v.replaced_by or "—",
                    v.note,
                )
                for v in CampaignVersion.objects.filter(campaign=obj).select_related("replaced_by")
            ),
        )
        return format_html(
            "<table><tr><th>version</th><th>experiment phase</th><th>replaced at</th><th>by</th>"
            "<th>note</th></tr>{}</table>",
            rows or mark_safe("<tr><td colspan=5>none: this is the first version</td></tr>"),
        )

    @admin.display(description="Deliveries")
    def deliveries_link(self, obj: Campaign) -> str:
        url = reverse("admin:campaigns_delivery_changelist") + f"?campaign__id__exact={obj.pk}"
        return format_html(
            '<a href="{}">monitoring</a> · <a href="{}">deliveries</a>', reverse("monitor:campaign", args=[obj.pk]), url
        )

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

    @admin.action(description="Duplicate selected campaigns as drafts", permissions=["add"])
    def duplicate_as_draft(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        copies = [editing.campaign_duplicate(campaign=c, user=request.user) for c in queryset]
        self.message_user(
            request,
            f"Draft copies: {', '.join(c.key for c in copies)} (each with a draft copy of its experiment).",
            messages.SUCCESS,
        )

    def duplicate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        copy = editing.campaign_duplicate(campaign=get_object_or_404(Campaign, pk=pk), user=request.user)
        self.message_user(request, f"Draft copy {copy.key} created; edit it, then launch.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[copy.pk]))

    def compute_audience_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The launch check's one click: compute the campaign's never-computed segments now."""
        campaign = get_object_or_404(Campaign, pk=pk)
        if not self.has_view_permission(request, campaign) or not request.user.has_perm("segments.change_segment"):
            raise PermissionDenied
        outcomes = lifecycle.campaign_audience_compute(campaign=campaign)
        summary = ", ".join(f"{target}: {status}" for target, status in outcomes.items()) or "nothing to compute"
        self.message_user(request, f"Computed {summary}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[pk]))

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("builder/", wrap(lambda r: builder.start_view(self, r)), name="campaigns_campaign_builder"),
            path(
                "<int:pk>/builder/",
                wrap(lambda r, pk: builder.edit_view(self, r, pk)),
                name="campaigns_campaign_builder_edit",
            ),
            path(
                "<int:pk>/builder/audience.json",
                wrap(lambda r, pk: builder.audience_view(self, r, pk)),
                name="campaigns_campaign_builder_audience",
            ),
            path(
                "<int:pk>/builder/launch/",
                wrap(require_POST(lambda r, pk: builder.launch_view(self, r, pk))),
                name="campaigns_campaign_builder_launch",
            ),
            path(
                "<int:pk>/builder/compute/",
                wrap(require_POST(lambda r, pk: builder.compute_view(self, r, pk))),
                name="campaigns_campaign_builder_compute",
            ),
            path("<int:pk>/preview/", wrap(self.preview_view), name="campaigns_campaign_preview"),
            path("<int:pk>/duplicate/", wrap(require_POST(self.duplicate_view)), name="campaigns_campaign_duplicate"),
            path(
                "<int:pk>/compute-audience/",
                wrap(require_POST(self.compute_audience_view)),
                name="campaigns_campaign_compute_audience",
            ),
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
            if lifecycle.segments_never_computed(campaign=campaign):
                # One click from the message: a button that computes them.
                self.message_user(
                    request,
                    format_html(
                        '<form method="post" action="{}" style="display:inline">'
                        '<input type="hidden" name="csrfmiddlewaretoken" value="{}">'
                        '<button type="submit" id="compute-audience">Compute audience now</button></form>'
                        " computes the campaign's never-computed segments.",
                        reverse("admin:campaigns_campaign_compute_audience", args=[pk]),
                        get_token(request),
                    ),
                    messages.WARNING,
                )
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
            customer = customer_get(external_id=form.cleaned_data["customer"])
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
        campaign = Campaign.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        # Only the transitions the campaign's status allows (the service refuses the others too).
        extra_context["transitions"] = [
            action for action, sources in lifecycle.TRANSITIONS.items() if campaign and campaign.status in sources
        ]
        extra_context["new_version_mode"] = _new_version_mode(request)
        extra_context["can_duplicate"] = self.has_add_permission(request)
        extra_context["can_new_version"] = (
            campaign is not None
            and campaign.is_locked
            and campaign.status != Campaign.Status.FINISHED
            and self.has_change_permission(request, campaign)
        )
        return super().change_view(request, object_id, form_url, extra_context=extra_context)


class ContentInline(admin.StackedInline):
    model = Content
    form = ContentForm
    extra = 0

    def _locked(self, request: HttpRequest, obj: Any) -> bool:
        return obj is not None and _locked_for(request, obj.campaign)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not self._locked(request, obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not self._locked(request, obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not self._locked(request, obj) and super().has_delete_permission(request, obj)


@admin.register(Treatment)
class TreatmentAdmin(admin.ModelAdmin):
    list_display = ["__str__", "campaign", "variant_key", "layer", "referral_role", "offer"]
    list_filter = ["campaign"]
    autocomplete_fields = ["offer"]
    inlines = [ContentInline]
    list_select_related = ["campaign", "layer__dimension", "offer"]
    change_form_template = "admin/campaigns/treatment/change_form.html"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not (obj is not None and _locked_for(request, obj.campaign)) and super().has_change_permission(
            request, obj
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not (obj is not None and obj.campaign.is_locked) and super().has_delete_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["campaign"] if obj is not None else []

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any):  # type: ignore[no-untyped-def]
        if db_field.name == "campaign":
            kwargs["queryset"] = Campaign.objects.filter(status=Campaign.Status.DRAFT)
            kwargs["help_text"] = "Draft campaigns only: a scheduled campaign changes through a new version."
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Treatment, form: Any, change: bool) -> None:
        campaign = Campaign.objects.get(pk=obj.campaign_id)
        if campaign.is_locked and _new_version_mode(request):
            request._treatment_pending = obj  # type: ignore[attr-defined]  # saved inside the new version
            return
        editing.treatments_write_check(campaign=campaign)
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pending = getattr(request, "_treatment_pending", None)
        if pending is None:
            super().save_related(request, form, formsets, change)
            return

        def apply() -> None:
            pending.save()
            form.save_m2m()
            for formset in formsets:
                self.save_formset(request, form, formset, change=change)

        _apply_new_version(self, request, pending.campaign, apply)
        _unsaved(formsets)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None):  # type: ignore[no-untyped-def]
        treatment = (
            Treatment.objects.select_related("campaign").filter(pk=object_id).first()
            if str(object_id).isdigit()
            else None
        )
        extra_context = {
            **(extra_context or {}),
            "new_version_mode": _new_version_mode(request),
            "can_new_version": treatment is not None
            and treatment.campaign.is_locked
            and treatment.campaign.status != Campaign.Status.FINISHED,
        }
        return super().change_view(request, object_id, form_url, extra_context=extra_context)


@admin.register(Offer)
class OfferAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "benefit_kind", "value", "currency", "code_source", "valid_until", "validity_days"]
    list_filter = ["benefit_kind", "code_source"]
    search_fields = ["key", "name"]
    change_form_template = "admin/campaigns/offer/change_form.html"

    # What a scheduled, running or finished campaign gives is read-only (a new offer instead).
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not (obj is not None and editing.offer_is_locked(offer=obj)) and super().has_change_permission(
            request, obj
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not (obj is not None and editing.offer_is_locked(offer=obj)) and super().has_delete_permission(
            request, obj
        )

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
        # Topping up a pool does not change what a live campaign promised: the offer's own lock
        # (has_change_permission above) does not apply here.
        if not super().has_change_permission(request, offer):
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


class MailboxCampaignFilter(admin.SimpleListFilter):
    """Messages of one campaign: a message carries its delivery's idempotency key, which
    starts with ``d<campaign id>-`` (``delivery_key``), so this is an index prefix scan, no join."""

    title = "campaign"
    parameter_name = "campaign"
    SHOWN = 30

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = Campaign.objects.exclude(status=Campaign.Status.DRAFT).order_by("-created_at")[: self.SHOWN]
        return [(str(c.pk), c.name) for c in recent]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(delivery_key__startswith=f"d{int(value)}-")


@admin.register(MailboxMessage)
class MailboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "channel", "to", "subject", "delivery_key"]
    list_filter = ["channel", MailboxCampaignFilter]
    search_fields = ["to", "subject", "=delivery_key"]
    fields = [
        "received_at",
        "campaign_link",
        "channel",
        "from_email",
        "to",
        "subject",
        "body_text",
        "html_rendered",
        "headers",
    ]
    readonly_fields = fields

    @admin.display(description="campaign")
    def campaign_link(self, obj: MailboxMessage) -> str:
        """The sending campaign's monitoring page, from the delivery key (``d<campaign id>-…``)."""
        prefix = obj.delivery_key.partition("-")[0]
        if not (prefix.startswith("d") and prefix[1:].isdigit()):
            return "—"
        row = Campaign.objects.filter(pk=int(prefix[1:])).only("name").first()
        if row is None:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("monitor:campaign", args=[row.pk]), row.name)

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
        with replica_reads():  # an export: the replica when fresh (config/replica.py)
            body = suppression.suppressions_export()
        response = HttpResponse(body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="suppressions.csv"'
        return response


@admin.register(TopicOptOut)
class TopicOptOutAdmin(ReadOnlyAdmin):
    list_display = ["customer", "channel", "topic", "opted_out", "changed_at", "source"]
    list_filter = ["channel", "topic", "opted_out"]
    search_fields = ["customer__external_id"]
    raw_id_fields = ["customer"]
