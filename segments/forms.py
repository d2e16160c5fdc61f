"""Admin forms: rules and dimension configs as JSON, with messages that say where. Forms render
and collect; the rules and the writes are the services' (``segments.services``)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from segments.models import Dimension, Segment, Tag, TagRule
from segments.services.dimensions import dimension_config_check
from segments.services.segments import segment_rule_validate
from segments.services.tags import (
    RULE_FAMILIES,
    TAG_CODE_HELP,
    tag_code_validate,
    tag_family_validate,
    tag_rule_validate,
)


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
    '{"attribute": "city_tier", "op": "in", "value": [1, 2]}, {"tag": "F3"}, '
    '{"layer": "rfm:important_value"}, '
    '{"event": "order", "agg": "count", "window": {"last_days": 90}, "op": "gte", "value": 3}, '
    '{"event": "order", "where": [{"property": "product", "op": "eq", "value": "TP"}], "agg": "count", '
    '"op": "gte", "value": 2}, '
    '{"share": {"event": "order", "where": [{"property": "coupon", "op": "exists"}]}, "op": "gte", "value": 0.5}, '
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
        fields = ["key", "name", "kind", "role", "config", "is_active"]

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


class TagRuleForm(forms.ModelForm):
    """A computed tag: its code, name and family (stored on the tag) and its rule. Checks
    with the service's own validators; the admin saves through ``tag_rule_create`` /
    ``tag_rule_update``."""

    code = forms.CharField(max_length=32, help_text=TAG_CODE_HELP)
    name = forms.CharField(max_length=100)
    family = forms.ChoiceField(choices=[(f.value, f.label) for f in RULE_FAMILIES])
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    rule = PrettyJSONField(widget=_json_widget(14), help_text=RULE_HELP.replace("Use Preview", "Preview"))

    class Meta:
        model = TagRule
        fields = ["rule", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            tag = self.instance.tag
            self.initial.update(code=tag.code, name=tag.name, family=tag.family, description=tag.description)
            self.fields["code"].disabled = True  # rules and segments name it

    def clean_code(self) -> str:
        code = self.cleaned_data["code"]
        if self.instance.pk:
            return self.instance.tag.code
        try:
            tag_code_validate(code=code)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["code"]) from None
        if Tag.objects.filter(code=code).exists():
            raise ValidationError(f"a tag with code {code!r} already exists")
        return code

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "rule" in cleaned and "code" in cleaned:
            try:
                tag_rule_validate(code=cleaned["code"], rule=cleaned["rule"])
            except ValidationError as exc:
                self.add_error("rule", exc.message_dict["rule"])
        return cleaned


class TagForm(forms.ModelForm):
    """A manual tag. New codes follow the scheme (``tag_code_validate``, the service's own
    check); the admin saves new tags through ``tag_create``."""

    class Meta:
        model = Tag
        fields = ["code", "name", "family", "description"]
        help_texts = {"code": TAG_CODE_HELP}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.instance.pk:
            return cleaned
        for name, check in (("code", tag_code_validate), ("family", tag_family_validate)):
            if name in cleaned:
                try:
                    check(**{name: cleaned[name]})
                except ValidationError as exc:
                    self.add_error(name, exc.message_dict[name])
        return cleaned
