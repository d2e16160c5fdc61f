"""Fixtures of the experiments engine tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from experiments import services
from experiments.models import Experiment, Holdout, Namespace
from segments.models import Customer, CustomerLayer, Dimension, Layer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_customers(db: None) -> Callable[..., list[Customer]]:
    """``make_customers(n, prefix="c")`` → n customers (bulk-created, ids ``<prefix>-00000``…)."""

    counter = {"batch": 0}

    def make(n: int, *, prefix: str | None = None) -> list[Customer]:
        counter["batch"] += 1
        prefix = prefix or f"b{counter['batch']}"
        Customer.objects.bulk_create([Customer(external_id=f"{prefix}-{i:05d}") for i in range(n)], batch_size=2000)
        return list(Customer.objects.filter(external_id__startswith=f"{prefix}-").order_by("pk"))

    return make


def variant_specs(weights: Sequence[Decimal | str | float], *, payloads: bool = True) -> list[services.VariantSpec]:
    keys = ["control", *[f"treatment{i}" if len(weights) > 2 else "treatment" for i in range(1, len(weights))]]
    return [
        services.VariantSpec(
            key=key,
            name=key.title(),
            weight=Decimal(str(weight)),
            payload={"variant": key, "discount": 10 * i} if payloads else {},
            is_control=i == 0,
        )
        for i, (key, weight) in enumerate(zip(keys, weights, strict=True))
    ]


@pytest.fixture
def make_experiment(db: None) -> Callable[..., Experiment]:
    """``make_experiment("key", weights=("0.5", "0.5"), coverage="1", start=True, **targeting)``."""

    def make(
        key: str = "checkout",
        *,
        weights: Sequence[Any] = ("0.5", "0.5"),
        coverage: Any = "1",
        start: bool = True,
        metrics: Sequence[services.MetricSpec] = (),
        **targeting: Any,
    ) -> Experiment:
        experiment = services.experiment_create(
            key=key,
            name=key.replace("-", " ").title(),
            variants=variant_specs(weights),
            coverage=Decimal(str(coverage)),
            targeting=services.Targeting(**targeting) if targeting else None,
            metrics=metrics,
        )
        if start:
            services.experiment_start(experiment=experiment)
        return experiment

    return make


@pytest.fixture
def namespace(db: None) -> Namespace:
    return Namespace.objects.create(key="checkout-layer", name="Checkout layer")


@pytest.fixture
def holdout(db: None) -> Holdout:
    return services.holdout_create(key="global", name="Global holdout", percent=Decimal("10"))


@pytest.fixture
def rfm(db: None) -> Dimension:
    """The built-in RFM dimension (seeded by the segments migrations)."""
    return Dimension.objects.get(key="rfm")


def place(customers: Sequence[Customer], layer: Layer) -> None:
    """Put customers in a layer (what a segments recompute would write)."""
    now = timezone.now()
    CustomerLayer.objects.bulk_create(
        [
            CustomerLayer(customer=c, dimension_id=layer.dimension_id, layer=layer, since=now, computed_at=now)
            for c in customers
        ]
    )


# --- Real server and worker processes -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url() -> str:
    """The test database as a URL for a child process (it reads committed rows only)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "API_THROTTLE_RATE": "100000/min",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@contextlib.contextmanager
def running_process(args: list[str], *, env: dict[str, str], ready: Callable[[], bool], what: str) -> Iterator[None]:
    log = Path(tempfile.mkstemp(prefix="experiments-test-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.unlink(missing_ok=True)


@contextlib.contextmanager
def gunicorn(*options: str, **env: str) -> Iterator[str]:
    """gunicorn serving the app on the test database on a free loopback port, ``env`` added
    to its environment; yields its base URL once ``/healthz`` answers."""
    base = f"http://127.0.0.1:{free_port()}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                return True
        except OSError:
            return False

    args = [str(ROOT / ".venv/bin/gunicorn"), "config.wsgi", "--bind", base.removeprefix("http://"), *options]
    with running_process(args, env=child_env(**env), ready=up, what="gunicorn"):
        yield base


@pytest.fixture
def app_server(transactional_db: None) -> Iterator[str]:
    """gunicorn (2 workers x 8 threads) serving the app on the test database; its base URL."""
    with gunicorn("--workers", "2", "--threads", "8", "--worker-class", "gthread", "--timeout", "60") as base:
        yield base


@contextlib.contextmanager
def celery_worker(*, pool: str = "solo", **env: str) -> Iterator[None]:
    """A real ``celery worker`` process consuming this run's broker (Redis DB N on the
    PostgreSQL pass, files under GROWTH_VAR_DIR on SQLite) and reading the test database;
    ``pool="prefork"`` (one child) where Celery's time limits must apply (solo ignores them)."""
    hostname = f"experiments-test-{os.getpid()}@%h"
    log_marker = {"ready": False}

    def ready() -> bool:
        if not log_marker["ready"]:
            from config.celery import app

            replies = app.control.ping(timeout=0.5) or []
            log_marker["ready"] = any(hostname.split("@")[0] in name for reply in replies for name in reply)
        return log_marker["ready"]

    args = [
        str(ROOT / ".venv/bin/celery"),
        "-A",
        "config",
        "worker",
        "--pool",
        pool,
        *(["--concurrency", "1"] if pool == "prefork" else []),
        "--hostname",
        hostname,
        "--loglevel",
        "INFO",
        "--without-mingle",
        "--without-gossip",
    ]
    with running_process(args, env=child_env(**env), ready=ready, what="celery worker"):
        yield


@pytest.fixture
def celery_worker_process(transactional_db: None) -> Iterator[None]:
    """A real ``celery worker`` process (solo pool), see ``celery_worker``."""
    with celery_worker():
        yield


def wait_until(predicate: Callable[[], bool], *, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(0.2)
