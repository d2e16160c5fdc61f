"""Writes of dimensions: validated configs and the layers (with tier tags) they imply.

The one door for dimension writes: the admin (``segments.admin.DimensionAdmin``), the demo
and tests create and change dimensions here; the admin form only shows this module's
errors next to the field."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from segments.dimensions import config_issues, default_config, layer_specs
from segments.models import CustomerLayer, Dimension, Layer, LayerHistory, Role, Tag

TAG_CODE_MAX = 32


def dimension_config_validate(*, kind: str, config: Any) -> None:
    """Raise ``ValidationError({"config": [...]})`` with path-precise messages."""
    issues = config_issues(kind, config)
    if issues:
        raise ValidationError({"config": [str(issue) for issue in issues]})


def dimension_config_check(*, kind: str, config: Any, dimension: Dimension | None = None) -> dict[str, Any]:
    """The config to store for ``kind``: the kind's defaults when empty, else ``config``
    once valid. Raises ``ValidationError({"config": [...]})`` for an invalid config or one
    that drops layers customers or history still point at (``dimension``: the stored row
    being changed). The admin form calls this to show errors inline; the writes below call
    it again inside their transaction."""
    config = default_config(kind) if config in (None, {}, "") else config
    dimension_config_validate(kind=kind, config=config)
    if dimension is not None and dimension.pk is not None:
        wanted = {spec.key for spec in layer_specs(kind, config)}
        busy = _busy_layers(Layer.objects.filter(dimension=dimension).exclude(key__in=wanted))
        if busy:
            raise ValidationError({"config": [_busy_message(busy)]})
    return config


def _busy_layers(layers: Any) -> list[str]:
    return [
        layer.key
        for layer in layers
        if CustomerLayer.objects.filter(dimension_id=layer.dimension_id, layer=layer).exists()
        or LayerHistory.objects.filter(layer=layer).exists()
    ]


def _busy_message(busy: list[str]) -> str:
    return (
        f"config: layer(s) {', '.join(busy)} have customers or history and cannot be removed; "
        "keep their keys (rename them instead)"
    )


def tier_tag_code(dimension_key: str, layer_key: str) -> str:
    return f"{dimension_key}.{layer_key}"[:TAG_CODE_MAX]


def dimension_sync_layers(*, dimension: Dimension) -> list[Layer]:
    """Create the layers the dimension's kind and config imply (each with its tier tag,
    family "tier"), update names and order, and remove layers the config dropped —
    refused while customers or history still point at them."""
    specs = layer_specs(dimension.kind, dimension.config)
    wanted = {spec.key for spec in specs}
    dropped = Layer.objects.filter(dimension=dimension).exclude(key__in=wanted)
    busy = _busy_layers(dropped)
    if busy:
        raise ValidationError({"config": [_busy_message(busy)]})
    for layer in dropped:
        if layer.tag_id:
            Tag.objects.filter(pk=layer.tag_id).delete()
        layer.delete()
    layers = []
    for position, spec in enumerate(specs):
        layer, _ = Layer.objects.update_or_create(
            dimension=dimension, key=spec.key, defaults={"name": spec.name, "position": position}
        )
        if layer.tag_id is None:
            tag, _ = Tag.objects.get_or_create(
                code=tier_tag_code(dimension.key, spec.key),
                defaults={
                    "name": f"{dimension.name}: {spec.name}"[:100],
                    "family": Tag.Family.TIER,
                    "source": Tag.Source.COMPUTED,
                    "description": f"Computed: the customer is in layer '{spec.key}' of dimension '{dimension.key}'.",
                },
            )
            if not Layer.objects.filter(tag=tag).exists():
                layer.tag = tag
                layer.save(update_fields=["tag"])
        layers.append(layer)
    return layers


@transaction.atomic
def dimension_create(
    *,
    key: str,
    name: str,
    kind: str,
    config: dict[str, Any] | None = None,
    is_active: bool = True,
    role: Role | None = None,
) -> Dimension:
    """``role``: layer only the customers holding it (two-sided platforms layer each side)."""
    config = dimension_config_check(kind=kind, config=config)
    dimension = Dimension(key=key, name=name, kind=kind, config=config, is_active=is_active, role=role)
    dimension.full_clean()
    dimension.save()
    dimension_sync_layers(dimension=dimension)
    return dimension


@transaction.atomic
def dimension_update(*, dimension: Dimension, **fields: Any) -> Dimension:
    for name, value in fields.items():
        setattr(dimension, name, value)
    dimension.config = dimension_config_check(kind=dimension.kind, config=dimension.config)
    dimension.full_clean()
    dimension.save()
    dimension_sync_layers(dimension=dimension)
    return dimension
