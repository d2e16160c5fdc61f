"""Writes of rule segments (validated rules) and the preview of a rule's audience."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from segments.models import Segment
from segments.rules import rule_check, rule_queryset

PREVIEW_SAMPLE = 20


def segment_rule_validate(*, rule: Any) -> None:
    """Raise ``ValidationError({"rule": [...]})``, one message per problem, each with its path."""
    issues, _ = rule_check(rule)
    if issues:
        raise ValidationError({"rule": [str(issue) for issue in issues]})


@transaction.atomic
def segment_create(
    *,
    key: str,
    name: str,
    rule: dict[str, Any],
    description: str = "",
    is_active: bool = True,
    created_by: AbstractBaseUser | None = None,
) -> Segment:
    segment_rule_validate(rule=rule)
    segment = Segment(
        key=key, name=name, rule=rule, description=description, is_active=is_active, created_by=created_by
    )
    segment.full_clean()
    segment.save()
    return segment


@transaction.atomic
def segment_update(*, segment: Segment, **fields: Any) -> Segment:
    for name, value in fields.items():
        setattr(segment, name, value)
    segment_rule_validate(rule=segment.rule)
    segment.full_clean()
    segment.save()
    return segment


@dataclass(frozen=True)
class SegmentPreview:
    count: int
    sample: list[str]  # external ids


def segment_preview(
    *, rule: Any, sample_size: int = PREVIEW_SAMPLE, as_of: dt.datetime | None = None
) -> SegmentPreview:
    """The audience a rule selects now, without saving anything: its size and a sample of
    external ids (validates first; raises ``ValidationError`` like a save would)."""
    segment_rule_validate(rule=rule)
    members = rule_queryset(rule=rule, as_of=as_of)
    sample = list(members.order_by("external_id").values_list("external_id", flat=True)[:sample_size])
    return SegmentPreview(count=members.count(), sample=sample)
