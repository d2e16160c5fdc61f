"""Admin forms: rules and dimension configs as JSON, with messages that say where. Forms render
and collect; the rules and the writes are the services' (``segments.services``)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from segments.models import Dimension, Segment
from segments.services.dimensions import dimension_config_check
from segments.services.segments import segment_rule_validate


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows the value indented (readable rules and configs)."""

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


def _json_widget(rows: int) -> forms.Textarea:
    return forms.Textarea(
        attrs={"rows": rows, "cols": 100, "spellcheck": "false", "style": "font-family: monospace; width: 95%;"}
    )


RULE_HELP = (
    'A rule node: {"all": [...]}, {"any": [...]}, {"not": rule}, or a condition: '
    '{"field": "signed_up_at", "op": "within_last_days", "value": 30}, '
    '{"attribute": "city_tier", "op": "in", "value": ["1", "2"]}, {"tag": "F3"}, '
    '{"layer": "rfm:important_value"}, '
    '{"event": "order", "agg": "count", "window": {"last_days": 90}, "op": "gte", "value": 3}, '
    '{"membership": {"plan": "plus"}, "agg": "latest_expiry", "op": "within_next_days", "value": 30}, '
    '{"rank": {"event": "order", "agg": "sum", "window": {"last_days": 365}}, "top_percent": 10}. '
    "Use Preview to see the audience size and a sample before saving."
)


class SegmentForm(forms.ModelForm):
    rule = PrettyJSONField(widget=_json_widget(18), help_text=RULE_HELP)

    class Meta:
        model = Segment
        fields = ["key", "name", "description", "rule", "is_active"]

    def clean_rule(self) -> Any:
        """Show the service's verdict inline (``segments.services.segments.segment_rule_validate``)."""
        rule = self.cleaned_data["rule"]
        try:
            segment_rule_validate(rule=rule)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["rule"]) from None
        return rule


class DimensionForm(forms.ModelForm):
    config = PrettyJSONField(
        widget=_json_widget(24),
        required=False,
        help_text="Thresholds and windows for this kind (leave empty for the defaults); validated when saved.",
    )

    class Meta:
        model = Dimension
        fields = ["key", "name", "kind", "config", "is_active"]

    def clean(self) -> dict[str, Any]:
        """Show the service's verdict inline; the rules live in
        ``segments.services.dimensions.dimension_config_check``."""
        cleaned = super().clean()
        kind = cleaned.get("kind") or (self.instance.kind if self.instance.pk else None)
        if not kind or "config" in self.errors:
            return cleaned
        try:
            cleaned["config"] = dimension_config_check(
                kind=kind, config=cleaned.get("config"), dimension=self.instance if self.instance.pk else None
            )
        except ValidationError as exc:
            self.add_error("config", exc.message_dict.get("config", exc.messages))
        return cleaned
