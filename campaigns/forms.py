"""Admin forms: campaigns (with per-kind defaults), content (validated against the known
variables when saved), previews and coupon pool uploads."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from campaigns.models import Campaign, Content, Treatment
from campaigns.services import configure
from campaigns.services.editing import campaign_update_check
from campaigns.services.render import content_check


class ChannelListField(forms.CharField):
    """Channels in order of preference, comma separated."""

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list):
            return value
        # Only collects; the rules (known channels, each once) are campaigns.services.configure's.
        return [item.strip() for item in (value or "").split(",") if item.strip()]

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(value)
        return value or ""


class CampaignForm(forms.ModelForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "topic" in self.fields:
            self.fields["topic"].required = False
            self.fields["topic"].help_text += " Empty: chosen by kind (renewals, referrals, recall, else promotions)."

    channels = ChannelListField(
        help_text="In order of preference, comma separated: email, sms, push, in_app. 'First reachable' "
        "uses the first one that reaches the customer (win-back: the channel that still reaches them).",
    )

    class Meta:
        model = Campaign
        fields = ["key", "name", "kind", *configure.CONFIG_FIELDS]

    new_version = False  # set by the admin in "Edit as a new version" mode

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        # The rules live in the services; asked here so each message shows next to its field.
        config = {name: data[name] for name in configure.CONFIG_FIELDS if name in data}
        try:
            kind = data.get("kind") or self.instance.kind
            data.update(configure.campaign_config_clean(kind=kind, config=config))
        except ValidationError as exc:
            self._add_service_errors(exc)
        if self.instance.pk is not None:
            stored = Campaign.objects.get(pk=self.instance.pk)
            changes = {name: data[name] for name in self.changed_data if name in data}
            try:
                campaign_update_check(campaign=stored, changes=changes, new_version=self.new_version)
            except ValidationError as exc:
                self._add_service_errors(exc)
        return data

    def _add_service_errors(self, exc: ValidationError) -> None:
        for name, messages in exc.message_dict.items():
            if name in self.fields and name not in self.errors:
                self.add_error(name, messages)
            elif name not in self.fields:
                self.add_error(None, messages)


class ContentForm(forms.ModelForm):
    class Meta:
        model = Content
        fields = ["channel", "subject", "title", "text", "html"]
        widgets = {
            "text": forms.Textarea(attrs={"rows": 4, "cols": 60}),
            "html": forms.Textarea(attrs={"rows": 4, "cols": 60}),
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        treatment: Treatment | None = getattr(self.instance, "treatment", None)
        if treatment is None or not data.get("channel"):
            return data
        fields = ("channel", "subject", "title", "text", "html")
        candidate = Content(treatment=treatment, **{k: data.get(k, "") or "" for k in fields})
        try:
            content_check(content=candidate)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                self.add_error(name if name in self.fields else None, messages)
        return data


class PreviewForm(forms.Form):
    customer = forms.CharField(label="Customer external id", max_length=128)
    content = forms.ModelChoiceField(queryset=Content.objects.none(), label="Content")

    def __init__(self, *args: Any, campaign: Campaign, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["content"].queryset = Content.objects.filter(treatment__campaign=campaign).select_related(
            "treatment__layer", "treatment__campaign"
        )


class CouponPoolForm(forms.Form):
    codes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 10, "cols": 40}), required=False, help_text="One code per line."
    )
    file = forms.FileField(required=False, help_text="Or a text/CSV file, one code per line (first column).")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        lines = (data.get("codes") or "").splitlines()
        upload = data.get("file")
        if upload is not None:
            text = upload.read().decode("utf-8", "replace")
            lines += [line.split(",")[0] for line in text.splitlines()]
        if not any(line.strip() for line in lines):
            raise ValidationError({"codes": "Paste codes or choose a file."})
        data["lines"] = lines
        return data


class SuppressionImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header line: channel,address,reason[,detail] (UTF-8).")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload = data.get("file")
        if upload is not None:
            try:
                data["text"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ValidationError({"file": "The file is not UTF-8 text."}) from None
        return data
