"""Celery queues by kind of work, so that one kind never waits behind another.

A fleet binds workers to queues (README, "Production layout"): sending workers take only
``send.*`` (and the 10-second tick on the default queue), deciding workers take ``decide``,
batch workers take ``recompute``, ``conversions``, ``imports`` and ``reports``. A long recompute then
occupies a batch worker and never a sending one. A worker started without ``-Q`` (the
demo's single worker, the embedded default) consumes every queue listed here, because
``task_queues`` lists them all.

No Django import: the settings module builds ``CELERY_TASK_QUEUES`` / ``CELERY_TASK_ROUTES``
from it, and ``campaigns.services.outbox`` picks a sending queue per channel.
"""

from __future__ import annotations

from kombu import Exchange, Queue

DEFAULT = "celery"  # the tick, the outbox sweep, anything unrouted: short tasks
DECIDE = "decide"  # audiences resolved, batches decided, triggers, experiment assignment
RECOMPUTE = "recompute"  # segment and dimension recomputes (minutes at a million customers)
CONVERSIONS = "conversions"  # experiments' conversion refreshes
IMPORTS = "imports"  # bulk imports run as tasks (``<app>.import_*``)
REPORTS = "reports"  # analytics runs: retention tables and funnels asked for as a task (seconds each)
# Sending, one queue per channel (segments.models.Channel's values): a slow SMS provider
# backs up its own queue, not email's.
CHANNELS = ("email", "sms", "push", "in_app")
SEND_PREFIX = "send."


def send_queue(channel: str) -> str:
    """The queue that sends ``channel``'s deliveries (unknown channels: email's)."""
    return SEND_PREFIX + (channel if channel in CHANNELS else CHANNELS[0])


SEND_QUEUES = tuple(send_queue(channel) for channel in CHANNELS)
ALL = (DEFAULT, *SEND_QUEUES, DECIDE, RECOMPUTE, CONVERSIONS, IMPORTS, REPORTS)

# Task name (glob) -> queue. ``campaigns.deliveries_send`` is published with the queue of
# its deliveries' channel (``campaigns.services.outbox.deliveries_enqueue``); the route
# here is for a publish that names none.
ROUTES: dict[str, dict[str, str]] = {
    "campaigns.deliveries_send": {"queue": send_queue("email")},
    "campaigns.audience_resolve": {"queue": DECIDE},
    "campaigns.audience_batch_decide": {"queue": DECIDE},
    "campaigns.triggers_process": {"queue": DECIDE},
    "experiments.audience_assign": {"queue": DECIDE},
    "segments.analytics_run": {"queue": REPORTS},
    "segments.analytics_runs_purge": {"queue": REPORTS},
    "segments.tasks.*": {"queue": RECOMPUTE},
    "experiments.conversions_refresh": {"queue": CONVERSIONS},
    "experiments.conversions_refresh_due": {"queue": CONVERSIONS},
    "*.import_*": {"queue": IMPORTS},
}


def queues() -> list[Queue]:
    """Every queue, each on a direct exchange of its own name (what Celery would create)."""
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in ALL]
