from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from campaigns.content import available_groups, content_validate, render_message

pytestmark = pytest.mark.pure

ALL = available_groups(has_offer=True, has_coupon=True, has_layer=True)


def test_content_validate__unknown_variable__error_names_field_and_variable() -> None:
    with pytest.raises(ValidationError) as info:
        content_validate(channel="email", fields={"subject": "Hi {{ customer.nickname }}", "text": "x"}, groups=ALL)
    assert list(info.value.message_dict) == ["subject"]
    assert "customer.nickname" in info.value.message_dict["subject"][0]


def test_content_validate__offer_variable_without_offer__error() -> None:
    groups = available_groups(has_offer=False, has_coupon=False, has_layer=False)
    with pytest.raises(ValidationError) as info:
        content_validate(channel="sms", fields={"text": "Use {{ coupon.code }}"}, groups=groups)
    assert "coupon.code" in info.value.message_dict["text"][0]


def test_content_validate__syntax_error__named() -> None:
    with pytest.raises(ValidationError) as info:
        content_validate(channel="push", fields={"title": "{% if %}", "text": "x"}, groups=ALL)
    assert "title" in info.value.message_dict


def test_content_validate__missing_required_and_unused_fields__errors() -> None:
    with pytest.raises(ValidationError) as info:
        content_validate(channel="sms", fields={"text": "", "subject": "nope"}, groups=ALL)
    assert set(info.value.message_dict) == {"text", "subject"}


def test_content_validate__known_variables_and_if_tags__valid() -> None:
    content_validate(
        channel="email",
        fields={
            "subject": "{{ customer.first_name|default:'Hello' }}, {{ offer.benefit }}",
            "text": "{% if customer.first_name %}Hi {{ customer.first_name }}{% endif %} {{ coupon.code }}",
            "html": "<p>{{ layer.name }}</p>",
        },
        groups=ALL,
    )


def test_render_message__missing_value_at_send__raises_not_blank() -> None:
    from campaigns.content import MissingVariable

    with pytest.raises(MissingVariable):
        render_message({"text": "{{ coupon.code }}"}, {"customer": {}})


def test_render_message__html_escaped_text_not() -> None:
    context = {"customer": {"first_name": "<b>Ann</b>"}}
    message = render_message(
        {"text": "Hi {{ customer.first_name }}", "html": "<p>{{ customer.first_name }}</p>"}, context
    )
    assert message.text == "Hi <b>Ann</b>"
    assert message.html == "<p>&lt;b&gt;Ann&lt;/b&gt;</p>"


def _django_rendering(source: str, context: dict[str, object]) -> str:
    from django.template import Context, Engine

    return Engine().from_string(source).render(Context(context)).strip()


def _outcome(render: object, source: str, context: dict[str, object]) -> tuple[str, object]:
    try:
        return "text", render(source, context)  # type: ignore[operator]
    except TypeError as exc:  # Django refuses time formats for dates: so must the memo
        return "error", str(exc)


@pytest.mark.parametrize(
    "fmt", ["", ":'Y-m-d'", ":'DATE_FORMAT'", ":'SHORT_DATETIME_FORMAT'", ":'D, d M Y H:i:s T e O'", ":'l jS F'"]
)
def test_date_filter__same_as_djangos(fmt: str) -> None:
    # Message templates use a remembered ``date``; whatever the value, format, time zone
    # and language, and however often it is asked, it writes what Django's writes.
    import datetime as dt
    import zoneinfo

    from django.utils import timezone, translation

    from campaigns.content import render_one

    paris = zoneinfo.ZoneInfo("Europe/Paris")
    values = [
        dt.datetime(2026, 12, 7, 23, 30, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 8, 0, 30, tzinfo=paris),  # the same instant as the first, another zone
        dt.datetime(2026, 10, 25, 2, 30, tzinfo=paris, fold=1),  # the repeated hour: fold matters
        dt.datetime(2026, 10, 25, 2, 30, tzinfo=paris),
        dt.date(2026, 12, 7),
        "",
        None,
    ]
    source = "{{ v|date" + fmt + " }}"
    rendered = 0
    for _ in range(2):  # the second round is answered from the memo
        for zone in ("UTC", "Asia/Shanghai", "America/New_York"):
            for language in ("en", "fr", "de"):
                with timezone.override(zone), translation.override(language):
                    for value in values:
                        expected = _outcome(_django_rendering, source, {"v": value})
                        assert _outcome(render_one, source, {"v": value}) == expected, (zone, language, value)
                        rendered += 1
    assert rendered > 100


def test_date_filter__setting_changed__memo_cleared(settings: object) -> None:
    import datetime as dt

    from django.utils import translation

    from campaigns.content import render_one

    value = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)
    with translation.override(None):  # no language: the DATE_FORMAT setting applies
        before = render_one("{{ v|date:'DATE_FORMAT' }}", {"v": value})
        settings.DATE_FORMAT = "Y/m/d"  # type: ignore[attr-defined]
        after = render_one("{{ v|date:'DATE_FORMAT' }}", {"v": value})
    assert before == "Dec. 7, 2026" and after == "2026/12/07"


def test_date_filter__without_time_zone_support__each_datetime_its_own_wall_time(settings: object) -> None:
    # With USE_TZ off nothing is converted: equal instants in two zones print differently.
    import datetime as dt
    import zoneinfo

    from campaigns.content import render_one

    settings.USE_TZ = False  # type: ignore[attr-defined]
    utc = dt.datetime(2026, 12, 7, 23, 30, tzinfo=dt.UTC)
    paris = utc.astimezone(zoneinfo.ZoneInfo("Europe/Paris"))
    rendered = [render_one("{{ v|date:'H:i' }}", {"v": v}) for v in (utc, paris)]
    assert rendered == [_django_rendering("{{ v|date:'H:i' }}", {"v": v}) for v in (utc, paris)] == ["23:30", "00:30"]
