"""The admin for tags: tag rules saved through the service (code scheme, rule errors with
their path), and manual tags set and removed on a customer's page (who, when, history)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest

from segments.models import CustomerTag, Tag, TagHistory, TagRule
from segments.services.tags import tag_rule_create
from tests.segments.conftest import World

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/segments/tagrule/add/"
PS_RULE = {"share": {"event": "order", "where": [{"property": "coupon", "op": "exists"}]}, "op": "gte", "value": 0.5}


def _post(code: str = "PS", rule: object = PS_RULE, **extra: str) -> dict[str, str]:
    return {
        "code": code,
        "name": "Price-sensitive",
        "family": "consumption",
        "description": "Half their orders or more used a coupon.",
        "rule": rule if isinstance(rule, str) else json.dumps(rule),
        "is_active": "on",
        **extra,
    }


def test_tag_rule_admin_add__valid__created_through_service_with_author(client, growth_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(growth_user)
    response = client.post(ADD_URL, _post())
    assert response.status_code == 302, response.context["adminform"].form.errors
    tag_rule = TagRule.objects.select_related("tag").get()
    assert (tag_rule.tag.code, tag_rule.tag.family, tag_rule.tag.source) == ("PS", "consumption", "computed")
    assert tag_rule.created_by == growth_user and tag_rule.rule == PS_RULE


def test_tag_rule_admin_add__code_outside_scheme__error_on_code_nothing_saved(client, growth_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(growth_user)
    response = client.post(ADD_URL, _post(code="price-sensitive"))
    assert response.status_code == 200
    assert "tag code scheme" in response.context["adminform"].form.errors["code"][0]
    assert not Tag.objects.filter(code="price-sensitive").exists() and not TagRule.objects.exists()


def test_tag_rule_admin_add__bad_rule__error_with_path(client, growth_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(growth_user)
    response = client.post(ADD_URL, _post(rule={**PS_RULE, "value": 50}))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["rule"][0].startswith("rule.value: must be a fraction")
    assert not TagRule.objects.exists()


def test_tag_rule_admin_change__code_posted__kept_rule_updated(client, growth_user) -> None:  # type: ignore[no-untyped-def]
    tag_rule = tag_rule_create(code="PS", name="x", family="consumption", rule=PS_RULE)
    client.force_login(growth_user)
    new_rule = {**PS_RULE, "value": 0.75}
    response = client.post(f"/admin/segments/tagrule/{tag_rule.pk}/change/", _post(code="HACK", rule=new_rule))
    assert response.status_code == 302, response.context["adminform"].form.errors
    tag_rule.refresh_from_db()
    assert tag_rule.tag.code == "PS" and tag_rule.rule == new_rule and tag_rule.tag.name == "Price-sensitive"


def test_tag_rule_admin__marketer__views_but_cannot_add(client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    tag_rule_create(code="PS", name="x", family="consumption", rule=PS_RULE)
    client.force_login(marketer_user)
    assert client.get("/admin/segments/tagrule/").status_code == 200
    assert client.post(ADD_URL, _post(code="PS2")).status_code == 403


class _FormFields(HTMLParser):
    """The values a browser would submit for the admin's change form (no __prefix__ rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, str] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        name = a.get("name", "")
        if tag == "input" and name and "__prefix__" not in name:
            if a.get("type") in ("submit", "button", "file"):
                return
            if a.get("type") == "checkbox" and "checked" not in a:
                return
            self.data[name] = a.get("value", "on" if a.get("type") == "checkbox" else "")
        elif tag == "select" and name and "__prefix__" not in name:
            self._select = name
            self.data.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select] = a.get("value", "")
        elif tag == "textarea" and name and "__prefix__" not in name:
            self._textarea = name
            self.data[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.data[self._textarea] += data.lstrip("\n") if not self.data[self._textarea] else data


def _change_form(client: Any, url: str) -> dict[str, str]:
    parser = _FormFields()
    parser.feed(client.get(url).content.decode())
    return parser.data


def test_customer_admin__manual_tag_added_then_removed__who_and_when_recorded(  # type: ignore[no-untyped-def]
    client, growth_user, world: World
) -> None:
    customer = world.customer("M1", attributes={"city_tier": 1})
    tag = Tag.objects.create(code="CALLBACK", name="Asked for a call", family="behaviour", source="manual")
    client.force_login(growth_user)
    url = f"/admin/segments/customer/{customer.pk}/change/"

    data = _change_form(client, url)
    data.update({"customer_tags-TOTAL_FORMS": "1", "customer_tags-0-tag": str(tag.pk)})
    response = client.post(url, data)
    assert response.status_code == 302, response.context and response.context["errors"]
    row = CustomerTag.objects.get(customer=customer, tag=tag)
    assert (row.source, row.assigned_by) == ("manual", growth_user)
    opened = TagHistory.objects.get(customer=customer, tag=tag)
    assert (opened.source, opened.changed_by, opened.lost_at) == ("manual", growth_user, None)

    data = _change_form(client, url)
    assert data["customer_tags-0-id"] == str(row.pk)
    data["customer_tags-0-DELETE"] = "on"
    response = client.post(url, data)
    assert response.status_code == 302, response.context and response.context["errors"]
    assert not CustomerTag.objects.filter(customer=customer).exists()
    closed = TagHistory.objects.get(customer=customer, tag=tag)
    assert closed.lost_at is not None and closed.changed_by == growth_user


def test_tag_admin_add__manual_tag__scheme_checked_and_saved_as_manual(client, growth_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(growth_user)
    data = {"name": "Asked for a call", "family": "behaviour", "description": ""}
    response = client.post("/admin/segments/tag/add/", {**data, "code": "asked for a call"})
    assert response.status_code == 200
    assert "tag code scheme" in response.context["adminform"].form.errors["code"][0]
    response = client.post("/admin/segments/tag/add/", {**data, "code": "CALL", "family": "tier"})
    assert "computed by dimensions" in response.context["adminform"].form.errors["family"][0]
    response = client.post("/admin/segments/tag/add/", {**data, "code": "CALL"})
    assert response.status_code == 302
    assert Tag.objects.filter(code="CALL", source="manual", family="behaviour").exists()
