"""The builder's live audience sizes: reads that need the decision's own audience and
split rules (``campaigns.services.decide``), so they live beside it rather than in
``campaigns.selectors`` (which the services import: keeping campaigns free of cycles)."""

from __future__ import annotations

from dataclasses import dataclass

from campaigns.models import Campaign
from campaigns.services.decide import (
    TreatmentIndex,
    campaign_audience,
    campaign_split_audience,
    treated_variant_keys,
)
from segments.selectors import audience_queryset


@dataclass(frozen=True)
class LayerSize:
    layer_id: int | None  # None: customers in no layer of the split dimension
    name: str
    size: int
    split: bool  # every treated variant acts here, so the experiment splits these customers


@dataclass(frozen=True)
class VariantSize:
    key: str
    name: str
    is_control: bool
    weight: str
    expected: int  # the split audience × the variant's weight (before coverage and holdout)


@dataclass(frozen=True)
class AudienceSizes:
    total: int
    split: int
    layers: tuple[LayerSize, ...]
    variants: tuple[VariantSize, ...]
    segments_never_computed: tuple[str, ...]


def campaign_audience_sizes(*, campaign: Campaign) -> AudienceSizes:
    """The builder's live audience: one SQL ``COUNT`` for the audience, one for the part the
    experiment splits (symmetric exposure) and one per layer of the split dimension. Per
    variant, the expected size is the split audience times the variant's weight: who lands
    where is decided at launch (sticky hashing, coverage, holdout), not before."""
    audience = campaign_audience(campaign=campaign)
    total = audience.count()
    split = campaign_split_audience(campaign=campaign).count()
    layers: list[LayerSize] = []
    if campaign.split_dimension_id is not None:
        index, keys = TreatmentIndex(campaign), treated_variant_keys(campaign)
        fallback = index.covers(variant_keys=keys, layer_id=None)
        in_some = 0
        for layer in campaign.split_dimension.layers.order_by("position", "pk"):
            size = audience_queryset(include_layer_ids=[layer.pk], base=audience).count()
            in_some += size
            layers.append(LayerSize(layer.pk, layer.name, size, index.covers(variant_keys=keys, layer_id=layer.pk)))
        layers.append(LayerSize(None, "(in no layer)", total - in_some, fallback))
    variants: list[VariantSize] = []
    if campaign.experiment_id is not None:
        for v in campaign.experiment.variants.order_by("pk"):
            expected = int((split * v.weight).to_integral_value())
            variants.append(VariantSize(v.key, v.name, v.is_control, format(v.weight.normalize(), "f"), expected))
    never = sorted(
        {
            *campaign.include_segments.filter(computed_at__isnull=True).values_list("key", flat=True),
            *campaign.exclude_segments.filter(computed_at__isnull=True).values_list("key", flat=True),
        }
    )
    return AudienceSizes(total, split, tuple(layers), tuple(variants), tuple(never))
