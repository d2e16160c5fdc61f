"""The Celery application. Tasks live in each app's ``tasks.py``."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("growth")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _bind_task_id(task_id: str | None = None, **_: object) -> None:
    from config.logging import task_id_var

    task_id_var.set(task_id)


@task_postrun.connect
def _unbind_task_id(**_: object) -> None:
    from config.logging import task_id_var

    task_id_var.set(None)
