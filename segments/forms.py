"""Admin forms: rules and dimension configs as JSON, validated with messages that say where."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from segments.dimensions import config_issues, default_config, layer_specs
from segments.models import CustomerLayer, Dimension, Layer, LayerHistory, Segment
from segments.rules import rule_check


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
        rule = self.cleaned_data["rule"]
        issues, _ = rule_check(rule)
        if issues:
            raise ValidationError([str(issue) for issue in issues])
        return rule


class DimensionForm(forms.ModelForm):
    config = PrettyJSONField(
        widget=_json_widget(24),
        required=False,
        help_text="Thresholds and windows for this kind (leave empty for the defaults); validated when saved.",
    )

    class Meta:
        model = Dimension
        fields = ["key", "name", "kind", "role", "config", "is_active"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("kind") or (self.instance.kind if self.instance.pk else None)
        if not kind or "config" in self.errors:
            return cleaned
        config = cleaned.get("config")
        if config in (None, {}, ""):
            config = cleaned["config"] = default_config(kind)
        issues = config_issues(kind, config)
        if issues:
            self.add_error("config", [str(issue) for issue in issues])
            return cleaned
        if self.instance.pk:
            wanted = {spec.key for spec in layer_specs(kind, config)}
            dropped = Layer.objects.filter(dimension=self.instance).exclude(key__in=wanted)
            busy = [
                layer.key
                for layer in dropped
                if CustomerLayer.objects.filter(layer=layer).exists()
                or LayerHistory.objects.filter(layer=layer).exists()
            ]
            if busy:
                self.add_error(
                    "config",
                    f"config: layer(s) {', '.join(busy)} have customers or history and cannot be removed; "
                    "keep their keys (rename them instead)",
                )
        return cleaned
