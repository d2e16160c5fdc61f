from __future__ import annotations

import pytest

from tests.browser.conftest import admin_login
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery-staple"


def test_marketer__opens_segment_add_form__refused(app_server, page, screenshot) -> None:  # type: ignore[no-untyped-def]
    UserFactory(username="mia", groups=["marketer"])
    admin_login(page, app_server, "mia", PASSWORD)
    screenshot("admin-index")
    # A marketer sees the models but no "Add" links.
    assert page.locator("a.addlink").count() == 0
    response = page.goto(f"{app_server}/admin/segments/segment/add/")
    assert response is not None and response.status == 403
    screenshot("refused")


def test_login__wrong_password__error_shown(app_server, page) -> None:  # type: ignore[no-untyped-def]
    UserFactory(username="gus", groups=["growth"])
    page.goto(f"{app_server}/admin/login/")
    page.fill("#id_username", "gus")
    page.fill("#id_password", "nope")
    page.click("input[type=submit]")
    assert "Please enter the correct username and password" in page.inner_text(".errornote")
