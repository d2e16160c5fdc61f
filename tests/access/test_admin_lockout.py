"""Admin brute-force protection (django-axes): a username is locked, from one address, after
``AXES_FAILURE_LIMIT`` (5) wrong passwords, for the cool-off period, even with the right one."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def staff() -> None:
    UserFactory(username="gus", groups=["growth"])
    UserFactory(username="mia", groups=["marketer"])


def _login(username: str, password: str, *, address: str = "10.0.0.1", **headers: str) -> tuple[Client, int]:
    client = Client(REMOTE_ADDR=address)
    response = client.post(LOGIN, {"username": username, "password": password}, headers=headers)
    return client, response.status_code


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def _fail(username: str, times: int, *, address: str = "10.0.0.1") -> None:
    for _ in range(times):
        _login(username, "wrong-password", address=address)


def test_admin_login__five_wrong_then_right__refused_with_429_page(staff: None) -> None:
    # Given five wrong passwords for gus from one address
    _fail("gus", 5)

    # When the right password comes from that address
    client = Client(REMOTE_ADDR="10.0.0.1")
    response = client.post(LOGIN, {"username": "gus", "password": PASSWORD})

    # Then it is refused, with a page saying why and when to retry
    assert response.status_code == 429
    assert not _logged_in(client)
    assert "too many login attempts" in response.content.decode()
    assert int(response["Retry-After"]) == 15 * 60


def test_admin_login__locked_then_axes_reset__right_password_works(staff: None) -> None:
    _fail("gus", 5)
    assert _login("gus", PASSWORD)[1] == 429

    call_command("axes_reset", verbosity=0)
    client, status = _login("gus", PASSWORD)

    assert status == 302 and _logged_in(client)


def test_admin_login__locked_user__other_user_and_other_address_not_locked(staff: None) -> None:
    _fail("gus", 5, address="10.0.0.1")

    other_user, other_user_status = _login("mia", PASSWORD, address="10.0.0.1")
    other_address, other_address_status = _login("gus", PASSWORD, address="10.0.0.2")

    assert other_user_status == 302 and _logged_in(other_user)
    assert other_address_status == 302 and _logged_in(other_address)
    assert _login("gus", PASSWORD, address="10.0.0.1")[1] == 429  # while gus there stays locked


def test_admin_login__four_wrong_then_right__allowed_and_count_reset(staff: None) -> None:
    _fail("gus", 4)
    assert _login("gus", PASSWORD)[1] == 302
    _fail("gus", 4)  # a fresh count: four more are not a lockout

    client, status = _login("gus", PASSWORD)

    assert status == 302 and _logged_in(client)
    _fail("gus", 5)
    assert _login("gus", PASSWORD)[1] == 429


def test_admin_login__locked_json_client__429_json_with_retry_after(staff: None) -> None:
    _fail("gus", 5)

    client = Client(REMOTE_ADDR="10.0.0.1")
    response = client.post(LOGIN, {"username": "gus", "password": PASSWORD}, headers={"Accept": "application/json"})

    assert response.status_code == 429 and response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "Account locked: too many login attempts. Please try again later.",
        "retry_after": 900,
    }


def test_admin_login__after_cool_off__right_password_works(staff: None) -> None:
    _fail("gus", 5)
    assert _login("gus", PASSWORD)[1] == 429

    with time_machine.travel(timezone.now() + dt.timedelta(minutes=16), tick=False):
        client, status = _login("gus", PASSWORD)

    assert status == 302 and _logged_in(client)
