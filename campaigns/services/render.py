"""Building a message's template context from a delivery's rows, and previews."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError

from campaigns.content import CustomerLocale, RenderedMessage, available_groups, content_validate, render_message
from campaigns.models import Campaign, Content, Coupon, Offer, Treatment
from segments.selectors import customer_layer_get

if TYPE_CHECKING:
    from segments.models import Customer, Layer


def customer_variables(
    *, external_id: str, email: str, phone: str, attributes: dict[str, Any] | None, locale: str, timezone: str
) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "email": email,
        "phone": phone,
        "first_name": str((attributes or {}).get("first_name", "")),
        "locale": locale,
        "timezone": timezone,
    }


def campaign_variables(campaign: Campaign) -> dict[str, Any]:
    return {"name": campaign.name, "key": campaign.key, "ends_at": campaign.ends_at or ""}


def offer_variables(offer: Offer) -> dict[str, Any]:
    return {
        "name": offer.name,
        "benefit": offer.describe(),
        "kind": offer.benefit_kind,
        "value": offer.value.normalize() if offer.value is not None else "",  # localized when rendered
        "currency": offer.currency,
        "valid_until": offer.valid_until or "",
    }


@dataclass(frozen=True)
class LayerLabel:
    key: str
    name: str


NO_LAYER = LayerLabel(key="(none)", name="(not in a layer)")


def layer_variables(layer: Layer | LayerLabel) -> dict[str, Any]:
    return {"key": layer.key, "name": layer.name}


def context_build(
    *,
    customer: dict[str, Any],
    campaign: dict[str, Any],
    offer: dict[str, Any] | None = None,
    coupon: dict[str, Any] | None = None,
    layer: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """A message's template context from its groups of variables (each group built once
    per row it comes from; the sender caches campaign, offer and layer groups per task)."""
    context: dict[str, dict[str, Any]] = {"customer": customer, "campaign": campaign}
    if offer is not None:
        context["offer"] = offer
        if coupon is not None:
            context["coupon"] = coupon
    if layer is not None:
        context["layer"] = layer
    return context


def message_context(
    *,
    campaign: Campaign,
    customer: Customer,
    offer: Offer | None = None,
    coupon: Coupon | None = None,
    layer: Layer | LayerLabel | None = None,
    coupon_placeholder: bool = False,
) -> dict[str, dict[str, Any]]:
    coupon_vars = None
    if offer is not None:
        if coupon is not None:
            coupon_vars = {"code": coupon.code, "expires_at": coupon.expires_at or ""}
        elif coupon_placeholder and offer.code_source != Offer.CodeSource.NONE:
            coupon_vars = {"code": "PREVIEW-CODE", "expires_at": campaign.ends_at or ""}
    context = context_build(
        customer=customer_variables(
            external_id=customer.external_id,
            email=customer.email,
            phone=customer.phone,
            attributes=customer.attributes,
            locale=customer.locale,
            timezone=customer.timezone,
        ),
        campaign=campaign_variables(campaign),
        offer=offer_variables(offer) if offer is not None else None,
        coupon=coupon_vars,
        layer=layer_variables(layer) if layer is not None else None,
    )
    if not campaign.is_transactional and customer.pk is not None:
        from campaigns.services.consent import unsubscribe_url

        context["unsubscribe_url"] = unsubscribe_url(customer_id=customer.pk, channel="email")  # type: ignore[assignment]
    else:
        context["unsubscribe_url"] = ""  # type: ignore[assignment]
    return context


def content_fields(content: Content) -> dict[str, str]:
    return {"subject": content.subject, "title": content.title, "text": content.text, "html": content.html}


def treatment_groups(treatment: Treatment) -> set[str]:
    offer = treatment.offer
    return available_groups(
        has_offer=offer is not None,
        has_coupon=offer is not None and offer.code_source != Offer.CodeSource.NONE,
        has_layer=treatment.layer_id is not None or treatment.campaign.split_dimension_id is not None,
    )


def content_check(*, content: Content) -> None:
    """Validate a content row against the variables its treatment provides; raises
    ``ValidationError`` naming the field."""
    content_validate(
        channel=content.channel, fields=content_fields(content), groups=treatment_groups(content.treatment)
    )


@dataclass(frozen=True)
class Preview:
    channel: str
    message: RenderedMessage
    customer_external_id: str


def content_preview(*, content: Content, customer: Customer) -> Preview:
    """Render ``content`` for ``customer`` as they would receive it (the coupon code shown as
    a placeholder unless the customer already holds one from this campaign)."""
    treatment = content.treatment
    campaign = treatment.campaign
    coupon = Coupon.objects.filter(campaign=campaign, customer=customer, offer=treatment.offer).first()
    layer = treatment.layer
    if layer is None and campaign.split_dimension_id is not None:
        layer = customer_layer_get(customer_id=customer.pk, dimension_id=campaign.split_dimension_id) or NO_LAYER
    context = message_context(
        campaign=campaign,
        customer=customer,
        offer=treatment.offer,
        coupon=coupon,
        layer=layer,
        coupon_placeholder=True,
    )
    locale = CustomerLocale()  # the customer's zone and language, as in the message they get
    locale.activate(customer.timezone, customer.locale)
    try:
        message = render_message(content_fields(content), context)
    except Exception as exc:  # any template failure is shown to the author as a field error
        raise ValidationError({"content": f"Cannot render: {exc}"}) from exc
    finally:
        locale.restore()
    return Preview(channel=content.channel, message=message, customer_external_id=customer.external_id)
