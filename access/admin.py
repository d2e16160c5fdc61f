from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from access.models import CLIENT_SCOPES, ApiKey, CustomerSigningKey, Scope
from access.services import (
    api_key_create,
    api_key_revoke,
    signing_key_create,
    signing_key_material_check,
    signing_key_revoke,
)


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ["name", "scopes"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "scopes", "created_at", "created_by", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_form(self, request: HttpRequest, obj: ApiKey | None = None, **kwargs):  # type: ignore[override]
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return [] if obj is None else [*self.readonly_fields, "name"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            return  # keys are immutable once issued; revoke and issue a new one instead
        key, raw = api_key_create(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"], created_by=request.user
        )
        obj.pk = key.pk
        messages.warning(request, f"The new key is shown only this once; copy it now: {raw}")

    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Revoke selected keys", permissions=["delete"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


class SigningKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(s.value, s.label) for s in CLIENT_SCOPES],
        initial=[s.value for s in CLIENT_SCOPES],
        widget=forms.CheckboxSelectMultiple,
        help_text="events:write lets a token log exposures only; ingestion needs a server API key.",
    )

    class Meta:
        model = CustomerSigningKey
        fields = ["name", "algorithm", "public_key", "audience", "scopes"]

    def clean(self) -> dict:  # type: ignore[type-arg]
        cleaned = super().clean() or {}
        if "algorithm" in cleaned:
            try:
                cleaned["public_key"] = signing_key_material_check(
                    algorithm=cleaned["algorithm"], public_key=cleaned.get("public_key", "")
                )
            except ValidationError as exc:
                self.add_error(None, exc)
        return cleaned


@admin.register(CustomerSigningKey)
class CustomerSigningKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "kid", "algorithm", "audience", "scopes", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["algorithm", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "kid"]
    # The HS256 secret is never shown after creation (the list and the form leave it out).
    readonly_fields = ["kid", "algorithm", "public_key", "audience", "scopes", "created_at", "created_by",
                       "last_used_at", "revoked_at"]  # fmt: skip
    fields = ["name", *readonly_fields]
    actions = ["revoke"]

    def get_form(self, request: HttpRequest, obj: CustomerSigningKey | None = None, **kwargs):  # type: ignore[override]
        if obj is None:
            kwargs["form"] = SigningKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: CustomerSigningKey | None = None) -> list[str]:
        return list(SigningKeyCreateForm.Meta.fields) if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: CustomerSigningKey | None = None) -> list[str]:
        return [] if obj is None else [*self.readonly_fields, "name"]

    def save_model(self, request: HttpRequest, obj: CustomerSigningKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            return  # keys are immutable once issued; revoke and create a new one instead
        key, secret = signing_key_create(
            name=form.cleaned_data["name"],
            algorithm=form.cleaned_data["algorithm"],
            public_key=form.cleaned_data["public_key"],
            audience=form.cleaned_data["audience"],
            scopes=form.cleaned_data["scopes"],
            created_by=request.user,
        )
        obj.pk = key.pk
        if secret:
            messages.warning(
                request,
                f"Key id (JWT header 'kid'): {key.kid}. The HS256 secret is shown only this once; put it in "
                f"your backend's secret store now, never in an app: {secret}",
            )
        else:
            messages.info(request, f"Key id (JWT header 'kid'): {key.kid}.")

    def has_change_permission(self, request: HttpRequest, obj: CustomerSigningKey | None = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Revoke selected signing keys (their tokens stop working)", permissions=["delete"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[CustomerSigningKey]) -> None:
        for key in queryset:
            signing_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} signing key(s).")
