"""The guided campaign builder: one flow in the admin, server-rendered, no CDN.

Step 1 (``builder/``) collects who (segments, layers, the split dimension), how (channels,
trigger) and the experiment (control share, treated variant keys, metric) and creates the
campaign *with its own experiment* through ``campaigns.services.configure.campaign_create``.
Step 2 (``<pk>/builder/``) is one page with sections: the live audience (per layer of the
split dimension and per variant; ``audience.json`` refreshes it), the treatment grid (variant
× layer: an offer and the content of every channel in use), a new offer, a preview per
channel for a sample customer, and the pre-launch checklist with the launch button.
Every write goes through the services; the forms here only collect and show their errors.
"""

from __future__ import annotations

import dataclasses
from decimal import ROUND_DOWN, Decimal
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from campaigns.models import Campaign, Content, Offer, Treatment
from campaigns.services import audience, configure, lifecycle
from campaigns.services.decide import campaign_audience
from campaigns.services.render import content_preview
from experiments import services as experiment_services
from segments.models import Channel, Dimension, EventType, Layer, Segment

CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "push": ("title", "text"),
    "in_app": ("title", "text"),
}
ANY = "any"


class StartForm(forms.Form):
    key = forms.SlugField(max_length=64, help_text="Also the key of the campaign's own experiment.")
    name = forms.CharField(max_length=150)
    kind = forms.ChoiceField(choices=Campaign.Kind.choices, initial=Campaign.Kind.CUSTOM)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), required=False)
    include_segments = forms.ModelMultipleChoiceField(
        queryset=Segment.objects.order_by("name"), required=False, widget=forms.CheckboxSelectMultiple
    )
    include_layers = forms.ModelMultipleChoiceField(
        queryset=Layer.objects.select_related("dimension").order_by("dimension__name", "position"),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text="OR within a dimension, AND across dimensions.",
    )
    exclude_layers = forms.ModelMultipleChoiceField(
        queryset=Layer.objects.select_related("dimension").order_by("dimension__name", "position"),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 4}),
    )
    split_dimension = forms.ModelChoiceField(
        queryset=Dimension.objects.order_by("name"),
        required=False,
        help_text="Treatments differ per layer of this dimension (renewal: the expiry windows).",
    )
    channels = forms.MultipleChoiceField(choices=Channel.choices, widget=forms.CheckboxSelectMultiple)
    trigger = forms.ChoiceField(choices=Campaign.Trigger.choices, initial=Campaign.Trigger.BROADCAST)
    trigger_event_type = forms.ModelChoiceField(queryset=EventType.objects.order_by("code"), required=False)
    with_experiment = forms.BooleanField(
        required=False, initial=True, label="Split with an experiment (a control group that gets nothing)"
    )
    control_percent = forms.IntegerField(min_value=1, max_value=99, initial=50, label="Control share (%)")
    variant_keys = forms.CharField(
        initial="offer", help_text="Treated variants, comma separated (e.g. offer or offer_a, offer_b)."
    )
    metric = forms.ModelChoiceField(
        queryset=EventType.objects.order_by("code"),
        to_field_name="code",
        required=False,
        help_text="The conversion the report measures (e.g. order).",
    )

    def variants(self) -> list[experiment_services.VariantSpec]:
        """Control first, then the treated variants sharing the rest equally (the last one
        takes the rounding remainder, so the weights add up to exactly 1)."""
        data = self.cleaned_data
        keys = [k.strip() for k in data["variant_keys"].split(",") if k.strip()]
        control = Decimal(data["control_percent"]) / 100
        share = ((1 - control) / max(len(keys), 1)).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
        specs = [experiment_services.VariantSpec(key="control", name="Control", weight=control, is_control=True)]
        for i, key in enumerate(keys):
            weight = share if i < len(keys) - 1 else 1 - control - share * (len(keys) - 1)
            specs.append(experiment_services.VariantSpec(key=key, name=key.replace("_", " ").title(), weight=weight))
        return specs


START_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Campaign", ("key", "name", "kind", "description")),
    ("Audience", ("include_segments", "include_layers", "exclude_layers", "split_dimension")),
    ("Channels and trigger", ("channels", "trigger", "trigger_event_type")),
    (
        "Experiment (created with the campaign, owned by it)",
        ("with_experiment", "control_percent", "variant_keys", "metric"),
    ),
)


def _add_errors(form: forms.Form, exc: ValidationError) -> None:
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for name, msgs in exc.message_dict.items():
        form.add_error(name if name in form.fields else None, msgs)


def start_view(modeladmin: Any, request: HttpRequest) -> HttpResponse:
    if not modeladmin.has_add_permission(request):
        raise PermissionDenied
    form = StartForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        config = {
            "description": data["description"],
            "include_segments": data["include_segments"],
            "include_layers": data["include_layers"],
            "exclude_layers": data["exclude_layers"],
            "split_dimension": data["split_dimension"],
            "channels": list(data["channels"]),
            "trigger": data["trigger"],
            "trigger_event_type": data["trigger_event_type"],
        }
        own = None
        if data["with_experiment"]:
            metric = data["metric"].code if data["metric"] is not None else "order"
            own = configure.OwnExperiment(variants=form.variants(), metric=metric)
        try:
            campaign = configure.campaign_create(
                key=data["key"],
                name=data["name"],
                kind=data["kind"],
                config=config,
                own_experiment=own,
                created_by=request.user,
            )
        except ValidationError as exc:
            _add_errors(form, exc)
        else:
            # "Done on save": a segment never computed would leave the audience empty.
            if data["include_segments"] and request.user.has_perm("segments.change_segment"):
                lifecycle.campaign_audience_compute(campaign=campaign)
            modeladmin.message_user(
                request,
                f"Campaign {campaign.key} created (draft). Now give each variant and layer its offer and content.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:campaigns_campaign_builder_edit", args=[campaign.pk]))
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": Campaign._meta,
        "title": "New campaign: the builder",
        "form": form,
        "sections": [(title, [form[name] for name in names]) for title, names in START_SECTIONS],
    }
    return TemplateResponse(request, "admin/campaigns/campaign/builder_start.html", context)


@dataclasses.dataclass
class Cell:
    """One (variant, layer) of the treatment grid and its form."""

    variant_key: str
    variant_label: str
    layer: Layer | None
    form: forms.Form
    channels: list[str]

    @property
    def by_channel(self) -> list[list[Any]]:
        """The cell's bound content fields, one list per channel (the grid's columns)."""
        return [
            [self.form[f"{channel}_{name}"] for name in CHANNEL_FIELDS.get(channel, ("text",))]
            for channel in self.channels
        ]

    @property
    def label(self) -> str:
        return f"{self.variant_label} × {self.layer.name if self.layer else 'any layer'}"


def _cell_form(campaign: Campaign, prefix: str, data: Any, initial: dict[str, Any]) -> forms.Form:
    fields: dict[str, forms.Field] = {
        "offer": forms.ModelChoiceField(queryset=Offer.objects.order_by("key"), required=False, label="Offer")
    }
    for channel in campaign.channels:
        for name in CHANNEL_FIELDS.get(channel, ("text",)):
            widget = forms.Textarea(attrs={"rows": 2, "cols": 48}) if name in ("text", "html") else None
            fields[f"{channel}_{name}"] = forms.CharField(
                required=False, label=f"{channel} {name}", widget=widget or forms.TextInput(attrs={"size": 48})
            )
    form_class = type("CellForm", (forms.Form,), fields)
    return form_class(data, prefix=prefix, initial=initial)


def _grid(campaign: Campaign, data: Any = None) -> list[Cell]:
    if campaign.experiment_id is not None:
        variants = [
            (v.key, f"{v.name} ({v.key})") for v in campaign.experiment.variants.filter(is_control=False).order_by("pk")
        ]
    else:
        variants = [("", "Everyone")]
    layers: list[Layer | None] = [None]
    if campaign.split_dimension_id is not None:
        included = set(
            campaign.include_layers.filter(dimension_id=campaign.split_dimension_id).values_list("pk", flat=True)
        )
        excluded = set(campaign.exclude_layers.values_list("pk", flat=True))
        layers = [
            layer
            for layer in campaign.split_dimension.layers.order_by("position", "pk")
            if (not included or layer.pk in included) and layer.pk not in excluded
        ] + [None]
    existing = {
        (t.variant_key, t.layer_id): t
        for t in Treatment.objects.filter(campaign=campaign, referral_role="").prefetch_related("contents")
    }
    cells = []
    for key, label in variants:
        for layer in layers:
            treatment = existing.get((key, layer.pk if layer else None))
            initial: dict[str, Any] = {}
            if treatment is not None:
                initial["offer"] = treatment.offer_id
                for content in treatment.contents.all():
                    for name in CHANNEL_FIELDS.get(content.channel, ("text",)):
                        initial[f"{content.channel}_{name}"] = getattr(content, name)
            prefix = f"t-{key or ANY}-{layer.pk if layer else ANY}"
            cells.append(Cell(key, label, layer, _cell_form(campaign, prefix, data, initial), list(campaign.channels)))
    return cells


def _save_grid(campaign: Campaign, cells: list[Cell]) -> None:
    """Save every filled cell; a cell left empty has no treatment (the checklist names the
    layers a variant then misses). All or nothing."""
    with transaction.atomic():
        for cell in cells:
            data = cell.form.cleaned_data
            texts = {name: value for name, value in data.items() if name != "offer" and value}
            existing = Treatment.objects.filter(
                campaign=campaign, variant_key=cell.variant_key, layer=cell.layer, referral_role=""
            ).first()
            if data["offer"] is None and not texts:
                if existing is not None:
                    configure.treatment_delete(treatment=existing)
                continue
            treatment = configure.treatment_set(
                campaign=campaign,
                variant_key=cell.variant_key,
                layer=cell.layer,
                offer=data["offer"],
                fallback=True,  # a filled "any layer" cell is the author's explicit fallback
            )
            for channel in campaign.channels:
                fields = {
                    name: data.get(f"{channel}_{name}", "") or "" for name in CHANNEL_FIELDS.get(channel, ("text",))
                }
                if any(fields.values()):
                    try:
                        configure.content_set(treatment=treatment, channel=channel, **fields)
                    except ValidationError as exc:
                        for name, msgs in exc.message_dict.items():
                            target = f"{channel}_{name}"
                            cell.form.add_error(target if target in cell.form.fields else None, msgs)
                        raise
                else:
                    configure.content_delete(treatment=treatment, channel=channel)


class OfferForm(forms.ModelForm):
    class Meta:
        model = Offer
        fields = ["key", "name", "benefit_kind", "value", "currency", "code_source", "code_prefix", "validity_days"]


class PreviewCustomerForm(forms.Form):
    customer = forms.CharField(required=False, label="Sample customer (external id)")


def _previews(campaign: Campaign, external_id: str) -> tuple[str, list[dict[str, Any]]]:
    from segments.selectors import customer_get

    customer = (
        customer_get(external_id=external_id)
        if external_id
        else campaign_audience(campaign=campaign).order_by("pk").first()
    )
    if customer is None:
        return "", []
    rows = []
    contents = Content.objects.filter(treatment__campaign=campaign).select_related(
        "treatment__campaign", "treatment__layer", "treatment__offer"
    )
    for content in contents.order_by("treatment__variant_key", "treatment__layer_id", "channel"):
        try:
            preview = content_preview(content=content, customer=customer)
        except ValidationError as exc:
            rows.append({"content": content, "error": "; ".join(exc.messages)})
        else:
            rows.append({"content": content, "message": preview.message})
    return customer.external_id, rows


def edit_view(modeladmin: Any, request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign.objects.select_related("experiment", "split_dimension"), pk=pk)
    if not modeladmin.has_view_permission(request, campaign):
        raise PermissionDenied
    can_change = modeladmin.has_change_permission(request, campaign) and not campaign.is_locked
    offer_form = OfferForm(prefix="offer")
    if request.method == "POST":
        if not can_change:
            raise PermissionDenied
        if "_offer" in request.POST:
            offer_form = OfferForm(request.POST, prefix="offer")
            if offer_form.is_valid():
                fields = {k: v for k, v in offer_form.cleaned_data.items() if k not in ("key", "name")}
                try:
                    offer = configure.offer_create(
                        key=offer_form.cleaned_data["key"], name=offer_form.cleaned_data["name"], **fields
                    )
                except ValidationError as exc:
                    _add_errors(offer_form, exc)
                else:
                    modeladmin.message_user(
                        request, f"Offer {offer.key} created: choose it in the grid.", messages.SUCCESS
                    )
                    return HttpResponseRedirect(request.path)
            cells = _grid(campaign)
        else:
            cells = _grid(campaign, request.POST)
            if all(cell.form.is_valid() for cell in cells):
                try:
                    _save_grid(campaign, cells)
                except ValidationError as exc:
                    modeladmin.message_user(request, "Not saved: " + "; ".join(exc.messages), messages.ERROR)
                else:
                    modeladmin.message_user(request, "Treatments and content saved.", messages.SUCCESS)
                    return HttpResponseRedirect(request.path)
    else:
        cells = _grid(campaign)
    preview_form = PreviewCustomerForm(request.GET or None)
    external_id = preview_form.data.get("customer", "") if preview_form.is_bound else ""
    sample, previews = _previews(campaign, external_id.strip())
    sizes = audience.campaign_audience_sizes(campaign=campaign)
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": Campaign._meta,
        "original": campaign,
        "title": f"Build: {campaign.name}",
        "cells": cells,
        "channels": campaign.channels,
        "offer_form": offer_form,
        "preview_form": preview_form,
        "sample": sample,
        "previews": previews,
        "sizes": sizes,
        "checklist": configure.campaign_launch_checklist(campaign=campaign) if not campaign.is_locked else [],
        "can_change": can_change,
        "can_launch": modeladmin.has_launch_permission(request),
        "can_compute": request.user.has_perm("segments.change_segment") and bool(sizes.segments_never_computed),
    }
    return TemplateResponse(request, "admin/campaigns/campaign/builder.html", context)


def audience_view(modeladmin: Any, request: HttpRequest, pk: int) -> JsonResponse:
    """The builder's live audience as JSON (counted by SQL; see ``campaign_audience_sizes``)."""
    campaign = get_object_or_404(Campaign.objects.select_related("experiment", "split_dimension"), pk=pk)
    if not modeladmin.has_view_permission(request, campaign):
        raise PermissionDenied
    return JsonResponse(dataclasses.asdict(audience.campaign_audience_sizes(campaign=campaign)))


def launch_view(modeladmin: Any, request: HttpRequest, pk: int) -> HttpResponse:
    if not modeladmin.has_launch_permission(request):
        raise PermissionDenied
    campaign = get_object_or_404(Campaign, pk=pk)
    try:
        configure.campaign_builder_launch(campaign=campaign)
    except ValidationError as exc:
        modeladmin.message_user(request, "Launch refused: " + "; ".join(exc.messages), messages.ERROR)
        return HttpResponseRedirect(reverse("admin:campaigns_campaign_builder_edit", args=[pk]))
    modeladmin.message_user(request, f"Campaign {campaign.key} launched.", messages.SUCCESS)
    return HttpResponseRedirect(reverse("admin:campaigns_campaign_change", args=[pk]))


def compute_view(modeladmin: Any, request: HttpRequest, pk: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=pk)
    if not modeladmin.has_view_permission(request, campaign) or not request.user.has_perm("segments.change_segment"):
        raise PermissionDenied
    outcomes = lifecycle.campaign_audience_compute(campaign=campaign)
    summary = ", ".join(f"{target}: {status}" for target, status in outcomes.items()) or "nothing to compute"
    modeladmin.message_user(request, f"Computed {summary}.", messages.SUCCESS)
    return HttpResponseRedirect(reverse("admin:campaigns_campaign_builder_edit", args=[pk]))
