"""Fixtures for the campaigns tests: real local peers (SMTP, HTTP provider, private Redis, a
Celery worker process) and small builders for campaigns."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from campaigns.models import ChannelPolicy
from tests.campaigns.peers import (
    HttpProvider,
    PrivateRedis,
    SmtpSink,
    Worker,
    celery_broker,
    database_url,
)


@pytest.fixture
def smtp_sink(settings: Any) -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield sink
    sink.stop()


@pytest.fixture
def http_provider(settings: Any) -> Iterator[HttpProvider]:
    provider = HttpProvider().start()
    settings.CAMPAIGNS = {
        **getattr(settings, "CAMPAIGNS", {}),
        "SMS_URL": provider.url,
        "PUSH_URL": provider.url.replace("messages", "push"),
        "SMS_TOKEN": "test-token",
        "HTTP_TIMEOUT": "5",
    }
    yield provider
    provider.stop()


@pytest.fixture
def fast_retries(settings: Any) -> None:
    settings.CAMPAIGNS = {**getattr(settings, "CAMPAIGNS", {}), "RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_SECONDS": "1"}


@pytest.fixture
def no_caps(db: None) -> None:
    """Channel policies without caps, quiet hours or rate limits (tests that set their own)."""
    ChannelPolicy.objects.update(
        daily_cap=None, weekly_cap=None, quiet_start=None, quiet_end=None, rate_per_second=None
    )


@pytest.fixture
def now() -> dt.datetime:
    return timezone.now()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis().start()
    yield redis
    redis.cleanup()


@pytest.fixture
def worker_factory(
    private_redis: PrivateRedis, transactional_db: None, smtp_sink: SmtpSink, http_provider: HttpProvider
) -> Iterator[Callable[..., Worker]]:
    """Start real ``celery worker`` processes on the private broker, reading the test
    database; this process publishes to the same broker for the test's duration."""
    workers: list[Worker] = []
    base_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "CELERY_BROKER_URL": private_redis.url,
        "CACHE_URL": os.environ.get("CACHE_URL", "locmemcache://"),
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_sink.port}",
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "CAMPAIGNS_SMS_URL": http_provider.url,
        "CAMPAIGNS_PUSH_URL": http_provider.url.replace("messages", "push"),
        "CAMPAIGNS_HTTP_TIMEOUT": "5",
        "CAMPAIGNS_RETRY_BASE_SECONDS": "0.2",
        "CAMPAIGNS_RETRY_MAX_SECONDS": "2",
        "CAMPAIGNS_LEASE_SECONDS": "20",
        "CAMPAIGNS_REQUEUE_AFTER_SECONDS": "5",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }

    def make(concurrency: int = 2, *, start: bool = True, queues: str = "", **env: str) -> Worker:
        worker = Worker(
            {**base_env, **env}, concurrency=concurrency, name=f"campaigns-test-{len(workers)}", queues=queues
        )
        workers.append(worker)
        return worker.start() if start else worker

    with celery_broker(private_redis.url):
        yield make
        for worker in workers:
            worker.stop()
            worker.log_path.unlink(missing_ok=True)
