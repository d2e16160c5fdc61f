"""Admin forms: the experiment editor's variant formset and the allocation / new-phase form.

Validation is the services' (``variants_validate``, ``experiment_allocation_update``); the
forms only turn their ``ValidationError`` into form errors.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms import BaseFormSet, BaseInlineFormSet, formset_factory

from experiments.models import Experiment
from experiments.services import VariantSpec, variants_validate
from experiments.services.lifecycle import RESERVED_KEY_PREFIX


class ExperimentAdminForm(forms.ModelForm):
    class Meta:
        model = Experiment
        fields = [
            "key",
            "name",
            "hypothesis",
            "owner",
            "minimum_detectable_effect",
            "coverage",
            "include_segments",
            "exclude_segments",
            "include_layers",
            "exclude_layers",
            "namespace",
            "namespace_start",
            "namespace_end",
            "holdout",
            # The analysis plan: editable while a draft, frozen at start (read-only after).
            "inference_mode",
            "planned_sample_size",
            "planned_end_at",
            "fixed_audience",
            "alpha",
            "correction",
            "confirmatory_dimensions",
        ]

    # Plan fields left out of a submission keep the model's defaults (sequential, alpha
    # 0.05, Holm), so forms and scripts written before the plan existed still work.
    PLAN_DEFAULTS = ("inference_mode", "alpha", "correction")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in self.PLAN_DEFAULTS:
            if name in self.fields:
                self.fields[name].required = False

    def _plan_default(self, name: str) -> Any:
        value = self.cleaned_data.get(name)
        return Experiment._meta.get_field(name).get_default() if value in (None, "") else value

    def clean_inference_mode(self) -> Any:
        return self._plan_default("inference_mode")

    def clean_alpha(self) -> Any:
        return self._plan_default("alpha")

    def clean_correction(self) -> Any:
        return self._plan_default("correction")

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        if key.startswith(RESERVED_KEY_PREFIX):
            raise ValidationError(f"Experiment keys may not start with '{RESERVED_KEY_PREFIX}' (reserved seeds).")
        return key


def _specs_from_forms(forms_: list[forms.Form]) -> list[VariantSpec]:
    return [
        VariantSpec(
            key=f.cleaned_data.get("key") or "",
            name=f.cleaned_data.get("name") or "",
            weight=Decimal(f.cleaned_data.get("weight") or 0),
            payload=f.cleaned_data.get("payload") or {},
            is_control=bool(f.cleaned_data.get("is_control")),
        )
        for f in forms_
        if f.cleaned_data and not f.cleaned_data.get("DELETE")
    ]


def _raise_as_formset_errors(error: ValidationError) -> None:
    messages = [m for ms in error.message_dict.values() for m in ms] if hasattr(error, "error_dict") else error.messages
    raise ValidationError(messages)


class VariantInlineFormSet(BaseInlineFormSet):
    """Draft experiments: at least two variants, exactly one control, weights summing to 100%.
    Once started, weights and keys are read-only here (see the allocation form)."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        live = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        if not live or "weight" not in live[0].fields:
            return  # read-only allocation: nothing to validate here
        try:
            variants_validate(variants=_specs_from_forms(live))
        except ValidationError as error:
            _raise_as_formset_errors(error)


class AllocationForm(forms.Form):
    coverage = forms.DecimalField(
        min_value=Decimal(0),
        max_value=Decimal(1),
        decimal_places=4,
        help_text="Share of targeted customers who enter (0–1). It may only rise within a phase.",
    )
    start_new_phase = forms.BooleanField(
        required=False,
        help_text=(
            "Re-randomize: a new hash seed, everyone is assigned afresh, the report analyses the new phase "
            "only. Required to lower coverage or to add, remove or re-key variants or change the control."
        ),
    )
    reason = forms.CharField(max_length=200, required=False, help_text="Why (recorded on the new phase).")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("start_new_phase") and not data.get("reason"):
            self.add_error("reason", "Say why a new phase starts.")
        return data


class AllocationVariantForm(forms.Form):
    key = forms.SlugField(max_length=64)
    name = forms.CharField(max_length=100)
    weight = forms.DecimalField(min_value=Decimal(0), max_value=Decimal(1), decimal_places=4, help_text="0.5 = 50%")
    payload = forms.JSONField(required=False, initial=dict)
    is_control = forms.BooleanField(required=False)


class BaseAllocationVariantFormSet(BaseFormSet):
    def specs(self) -> list[VariantSpec]:
        return _specs_from_forms(list(self.forms))

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        try:
            variants_validate(variants=self.specs())
        except ValidationError as error:
            _raise_as_formset_errors(error)


AllocationVariantFormSet = formset_factory(
    AllocationVariantForm, formset=BaseAllocationVariantFormSet, extra=1, can_delete=True
)
