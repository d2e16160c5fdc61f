"""A large database in a real Chromium: the retention page says it is computing, a real Celery
worker computes the run, and the page reloads itself into the same table and chart."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from config.celery import app
from segments.models import AnalyticsRun
from tests.browser.conftest import admin_login
from tests.browser.test_analytics_journey import PASSWORD, RETENTION, _business
from tests.experiments.conftest import ROOT, child_env, gunicorn, running_process
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def large_db_server(transactional_db: None) -> Iterator[str]:
    """gunicorn serving the test database with the async threshold at 1 customer (the data has 2)."""
    with gunicorn("--workers", "1", GROWTH_ANALYTICS_ASYNC_CUSTOMERS="1") as base:
        yield base


def test_retention_page__large_database__computing_then_the_worker_result_drawn(large_db_server, page) -> None:  # type: ignore[no-untyped-def]
    page.set_default_timeout(60_000)
    _business()
    UserFactory(username="growth-user", groups=["growth"])
    admin_login(page, large_db_server, "growth-user", PASSWORD)

    # Given no worker yet: the page says it is computing, without a table.
    page.goto(large_db_server + RETENTION)
    assert "Computing since" in page.locator("#analytics-run-pending").inner_text()
    assert page.locator("#retention-table").count() == 0
    assert AnalyticsRun.objects.get().status == "queued"

    # When a real worker starts: the page, reloading itself, shows the run's table and chart.
    hostname = f"analytics-browser-{os.getpid()}"
    worker = [
        *(str(ROOT / ".venv/bin/celery"), "-A", "config", "worker", "--pool", "solo"),
        *("--hostname", f"{hostname}@%h", "--without-mingle", "--without-gossip", "-Q", "reports"),
    ]

    def ready() -> bool:
        return any(hostname in name for reply in (app.control.ping(timeout=0.5) or []) for name in reply)

    with running_process(worker, env=child_env(), ready=ready, what="celery worker"):
        page.wait_for_selector("#retention-chart[data-rendered='true']")

    assert "50.0%" in page.locator("#retention-table").inner_text()
    assert AnalyticsRun.objects.get().status == "done"
