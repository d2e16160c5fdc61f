from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

from access.services import api_key_create


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Data migrations seed reference data (event types, groups, built-in dimensions,
    # schedules). A transactional test ends with a flush that deletes it, breaking every
    # later test, unless the test restores it with serialized_rollback.
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker and marker.kwargs.get("transaction") and not marker.kwargs.get("serialized_rollback"):
            raise pytest.UsageError(
                f"{item.nodeid}: use @pytest.mark.django_db(transaction=True, serialized_rollback=True) "
                "so the reference data seeded by migrations survives the flush."
            )
    # Safety net for a bare `pytest` run: PostgreSQL-only tests skip on SQLite.
    if settings.IS_POSTGRES:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL + Redis (run through `make test`)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterable[None]:
    # Throttle counters and rate limits live in the shared cache.
    cache.clear()
    yield


@pytest.fixture
def api_client_factory(db: None) -> Callable[..., APIClient]:
    """``api_client_factory("events:write", ...)`` → an APIClient holding a fresh key with those scopes."""

    def make(*scopes: str, name: str = "test client") -> APIClient:
        _, raw = api_key_create(name=name, scopes=scopes)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
        client.raw_key = raw  # type: ignore[attr-defined]
        return client

    return make


@pytest.fixture
def growth_user(db: None):  # type: ignore[no-untyped-def]
    from tests.factories import UserFactory

    return UserFactory(groups=["growth"])


@pytest.fixture
def marketer_user(db: None):  # type: ignore[no-untyped-def]
    from tests.factories import UserFactory

    return UserFactory(groups=["marketer"])


@pytest.fixture
def eager() -> Iterator[None]:
    """Celery tasks run in the calling process (``.delay()`` executes at once)."""
    from config.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous
