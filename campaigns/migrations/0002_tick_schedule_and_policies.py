"""The periodic tick (django-celery-beat, every 10 seconds) and default channel policies."""

import datetime as dt

from django.db import migrations

TICK_NAME = "campaigns: tick (start due, sweep outbox, triggers)"

DEFAULT_POLICIES = [
    # channel, daily cap, weekly cap, quiet start, quiet end, rate per second
    ("email", 2, 6, None, None, None),
    ("sms", 1, 3, dt.time(21, 0), dt.time(9, 0), 50),
    ("push", 3, 10, dt.time(22, 0), dt.time(8, 0), None),
    ("in_app", None, None, None, None, None),
]


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=10, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=TICK_NAME,
        defaults={"task": "campaigns.tick", "interval": every, "enabled": True, "expire_seconds": 60},
    )
    ChannelPolicy = apps.get_model("campaigns", "ChannelPolicy")
    for channel, daily, weekly, quiet_start, quiet_end, rate in DEFAULT_POLICIES:
        ChannelPolicy.objects.get_or_create(
            channel=channel,
            defaults={
                "daily_cap": daily,
                "weekly_cap": weekly,
                "quiet_start": quiet_start,
                "quiet_end": quiet_end,
                "rate_per_second": rate,
            },
        )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TICK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(create, remove)]
