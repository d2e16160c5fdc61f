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
