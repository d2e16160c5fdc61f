"""The Celery application's process setup."""

from __future__ import annotations

import gc

import pytest
from celery.signals import worker_process_init

import config.celery  # noqa: F401 - connects the signal handlers

pytestmark = pytest.mark.pure


def test_worker_process_init__pool_process__inherited_objects_frozen() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        worker_process_init.send(sender=None)
        assert gc.get_freeze_count() > 10_000  # Django and the apps, imported before the fork
    finally:
        gc.unfreeze()
