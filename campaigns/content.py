"""Message templates: Django templates over a known set of variables.

A separate template ``Engine`` (not the site's) renders content, with a ``string_if_invalid``
that *raises* instead of printing an empty string: a template that names a variable outside
the known set fails validation when it is saved (``content_validate``), and could never
render an empty hole at send time. ``{% if var %}`` still works for optional values (Django
resolves tag arguments with ``ignore_failures``); a ``default`` filter on an unknown name
does not, on purpose.

Variables::

    customer.external_id .email .phone .first_name .locale .timezone
    campaign.name .key .ends_at
    offer.name .benefit .kind .value .currency .valid_until       (treatments with an offer)
    coupon.code .expires_at                                        (offers that issue codes)
    layer.key .name                                                (per-layer treatments)
    unsubscribe_url      the recipient's signed unsubscribe / preference link (marketing
                         email and SMS; empty in transactional messages). An email whose
                         text lacks it gets a default footer carrying it.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import global_settings, settings
from django.conf.locale import LANG_INFO
from django.core.exceptions import ValidationError
from django.core.signals import setting_changed
from django.template import Context, Engine, Library, TemplateSyntaxError, defaultfilters
from django.template.base import Template
from django.utils import timezone, translation

VARIABLES: dict[str, tuple[str, ...]] = {
    "customer": ("external_id", "email", "phone", "first_name", "locale", "timezone"),
    "campaign": ("name", "key", "ends_at"),
    "offer": ("name", "benefit", "kind", "value", "currency", "valid_until"),
    "coupon": ("code", "expires_at"),
    "layer": ("key", "name"),
}

CONTENT_FIELDS = ("subject", "title", "text", "html")
# Which fields each channel needs (required) and may use.
CHANNEL_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "email": (("subject", "text"), ("subject", "text", "html")),
    "sms": (("text",), ("text",)),
    "push": (("title", "text"), ("title", "text")),
    "in_app": (("title", "text"), ("title", "text")),
}
SMS_MAX_LENGTH = 480  # three concatenated segments


class MissingVariable(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown variable '{name}'.")
        self.name = name


class _RaiseOnInvalid(str):
    """``string_if_invalid`` that raises: Django formats it with the variable name."""

    def __contains__(self, item: object) -> bool:
        return item == "%s"

    def __mod__(self, name: object) -> str:
        raise MissingVariable(str(name))


# --- Filters that replace Django's in message templates ------------------------------

register = Library()  # the name Django looks up in a template library module


@register.filter(is_safe=False)
def date(value: Any, arg: str | None = None) -> str:
    """Django's ``date`` filter, remembered per value, format, current time zone and
    language. A message's dates are the coupon's expiry or the campaign's end, the same
    for thousands of messages, and Django's filter costs 55-80 µs a call on this machine
    (local time conversion, format lookup and the formatter each read asgiref locals):
    three times the rest of a typical message body. The result is the same string
    (``test_date_filter__same_as_djangos``); the memo is cleared when a setting changes."""
    key = (
        value,
        getattr(value, "tzinfo", None),  # equal instants in other zones are equal datetimes
        getattr(value, "fold", 0),
        arg,
        timezone.get_current_timezone(),
        translation.get_language(),
        settings.USE_TZ,
    )
    try:
        hash(key)
    except TypeError:  # an unhashable value: not remembered
        return _django_date(value, arg)
    return _date(key)


def _django_date(value: Any, arg: str | None) -> str:
    # Django's filter is registered with ``expects_localtime``: the template converts first.
    return defaultfilters.date(timezone.template_localtime(value), arg)


@lru_cache(maxsize=4096)
def _date(key: tuple[Any, ...]) -> str:
    return _django_date(key[0], key[3])


def _caches_clear(**kwargs: Any) -> None:
    _date.cache_clear()
    customer_language.cache_clear()


setting_changed.connect(_caches_clear, weak=False, dispatch_uid="campaigns.content.date")

_ENGINES = {
    autoescape: Engine(
        autoescape=autoescape,
        string_if_invalid=_RaiseOnInvalid("!"),
        builtins=["campaigns.content"],  # after Django's: its ``date`` replaces theirs
        libraries={},
        debug=False,
    )
    for autoescape in (False, True)
}


# --- The customer's own time zone and language ---------------------------------------


@lru_cache(maxsize=1024)
def customer_zone(name: str) -> dt.tzinfo:
    """The customer's IANA zone (``Customer.timezone``); the default zone if unknown."""
    try:
        return zoneinfo.ZoneInfo(name) if name else timezone.get_default_timezone()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return timezone.get_default_timezone()


# The languages a message's dates and numbers can be formatted in: every language Django
# has formats for. Not ``settings.LANGUAGES``, which lists the languages the site's own pages
# and footers are translated to (``campaigns.services.consent.language_for``): a French
# customer reads "19 décembre 2026" in a message whose unsubscribe footer is in English.
_FORMAT_LANGUAGES = frozenset(code for code, _ in global_settings.LANGUAGES)


@lru_cache(maxsize=1024)
def customer_language(locale: str) -> str:
    """The Django language for a customer's locale (``zh-Hans``, ``zh_CN``, ``en-US``,
    ``fr``): the closest of Django's languages (as ``get_supported_language_variant``
    chooses: the code, its ``LANG_INFO`` fallbacks, its generic variants, then a regional
    variant of the generic one), else ``LANGUAGE_CODE``."""
    code = translation.to_language(locale.replace("_", "-"))[:32] if locale else ""
    if not code:
        return settings.LANGUAGE_CODE
    candidates = [code, *LANG_INFO.get(code, {}).get("fallback", [])]
    candidates += [code[:i] for i in range(len(code) - 1, 0, -1) if code[i] == "-"]
    for candidate in candidates:
        if candidate in _FORMAT_LANGUAGES:
            return candidate
    generic = candidates[-1]
    return next(
        (known for known in sorted(_FORMAT_LANGUAGES) if known.startswith(f"{generic}-")), settings.LANGUAGE_CODE
    )


class CustomerLocale:
    """Activates each customer's zone and language before their message is rendered, so
    ``{{ coupon.expires_at }}``, ``|date``, ``|time`` and numbers read as they would read
    them (a New York customer's "until" is New York's date). Switches only when the customer
    differs from the previous one (the ``date`` memo keys on the active zone and language);
    ``restore`` puts back what was active before."""

    def __init__(self) -> None:
        self.zone: str | None = None
        self.language: str | None = None
        self.saved: tuple[dt.tzinfo, str | None] | None = None

    def activate(self, zone: str, locale: str) -> None:
        if self.saved is None:
            self.saved = (timezone.get_current_timezone(), translation.get_language())
        if zone != self.zone:
            timezone.activate(customer_zone(zone))
            self.zone = zone
        language = customer_language(locale)
        if language != self.language:
            translation.activate(language)
            self.language = language

    def restore(self) -> None:
        if self.saved is None:
            return
        zone, language = self.saved
        timezone.activate(zone)
        if language:
            translation.activate(language)
        else:
            translation.deactivate_all()
        self.saved = self.zone = self.language = None


@lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> Template:
    return _ENGINES[html].from_string(source)


@dataclass(frozen=True)
class RenderedMessage:
    subject: str = ""
    title: str = ""
    text: str = ""
    html: str = ""


def available_groups(*, has_offer: bool, has_coupon: bool, has_layer: bool) -> set[str]:
    groups = {"customer", "campaign"}
    if has_offer:
        groups.add("offer")
    if has_offer and has_coupon:
        groups.add("coupon")
    if has_layer:
        groups.add("layer")
    return groups


def sample_context(groups: set[str]) -> dict[str, dict[str, Any]]:
    """Every known variable of the available groups, with a plausible value."""
    samples: dict[str, Any] = {
        "ends_at": dt.datetime(2030, 1, 31, tzinfo=dt.UTC),
        "valid_until": dt.datetime(2030, 1, 31, tzinfo=dt.UTC),
        "expires_at": dt.datetime(2030, 1, 31, tzinfo=dt.UTC),
        "value": "10",
    }
    context: dict[str, Any] = {
        group: {name: samples.get(name, f"[{group}.{name}]") for name in VARIABLES[group]} for group in groups
    }
    context["unsubscribe_url"] = "https://example.invalid/u/preview"
    return context


def render_one(source: str, context: dict[str, Any], *, html: bool = False) -> str:
    if not source:
        return ""
    return _compile(source, html).render(Context(context, autoescape=html)).strip()


def render_message(fields: dict[str, str], context: dict[str, Any]) -> RenderedMessage:
    return RenderedMessage(
        subject=" ".join(render_one(fields.get("subject", ""), context).split()),
        title=render_one(fields.get("title", ""), context),
        text=render_one(fields.get("text", ""), context),
        html=render_one(fields.get("html", ""), context, html=True),
    )


def content_validate(*, channel: str, fields: dict[str, str], groups: set[str]) -> None:
    """Raise ``ValidationError`` naming the field for a syntax error, a variable outside the
    known set (or of a group this treatment does not have), or a missing required field."""
    errors: dict[str, list[str]] = {}
    required, allowed = CHANNEL_FIELDS[channel]
    for name in required:
        if not fields.get(name, "").strip():
            errors.setdefault(name, []).append(f"Required for {channel} messages.")
    for name in CONTENT_FIELDS:
        source = fields.get(name, "")
        if not source:
            continue
        if name not in allowed:
            errors.setdefault(name, []).append(f"Not used by {channel} messages; leave it empty.")
            continue
        try:
            rendered = render_one(source, sample_context(groups), html=name == "html")
        except TemplateSyntaxError as exc:
            errors.setdefault(name, []).append(f"Template error: {exc}")
        except MissingVariable as exc:
            known = ", ".join(f"{g}.{v}" for g in sorted(groups) for v in VARIABLES[g])
            errors.setdefault(name, []).append(f"Unknown variable '{exc.name}'. Available here: {known}.")
        else:
            if channel == "sms" and name == "text" and len(rendered) > SMS_MAX_LENGTH:
                errors.setdefault(name, []).append(f"SMS text renders to {len(rendered)} characters (max 480).")
    if errors:
        raise ValidationError(errors)
