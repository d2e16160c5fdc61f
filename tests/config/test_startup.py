"""Django start-up does not import the numerical stack (scipy, statsmodels, pandas).

Every ``manage.py`` command, Celery worker and the events importer sets Django up; the
statistics are reached from there (experiments.services -> metric kinds -> experiments.stats)
and used to cost ~0.9 s of CPU each time.  They load when a statistic runs instead
(experiments.stats._lazy).  Checked in a fresh interpreter: this test process has long
imported them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("scipy", "statsmodels", "pandas")

# What ``manage.py check`` loads (apps, models, admin, URLconf and every view behind it), plus
# the Celery app with each app's tasks and API modules (a worker's start-up).
_START_UP = """
import importlib, json, sys
import django
django.setup()
from django.core.management import call_command
call_command("check", verbosity=0)
from django.urls import get_resolver
get_resolver().url_patterns
import config.celery
for app in ("access", "segments", "experiments", "campaigns", "demo"):
    for module in ("tasks", "api", "admin", "selectors", "services"):
        try:
            importlib.import_module(f"{app}.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"{app}.{module}":
                raise
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in %r)))
"""


def _modules_after(script: str) -> list[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_django_setup__check_urls_tasks_loaded__no_scipy_statsmodels_pandas() -> None:
    # Given a fresh interpreter / When Django starts as manage.py check and a worker do
    loaded = _modules_after(_START_UP % (HEAVY,))
    # Then none of the numerical stack is imported
    assert loaded == []
