"""Admin finish: the header and the title name the product; no "View site" link to a 404."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_admin_pages__growth_user__product_named_and_no_view_site_link(growth_user) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(growth_user)
    for url in ("/admin/", "/admin/campaigns/campaign/", "/admin/playbook/", "/admin/reports/"):
        html = client.get(url).content.decode()
        assert "Growth experimentation platform" in html, url
        assert "| Growth platform</title>" in html, url
        assert "Django site admin" not in html and "Django administration" not in html, url
        assert "View site" not in html, url
    assert client.get("/").status_code == 404  # what "View site" used to open
