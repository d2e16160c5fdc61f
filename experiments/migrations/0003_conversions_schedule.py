"""Refresh conversions every 10 minutes (incremental) and fully once a night
(django-celery-beat); growth users can change the schedules in the admin."""

import json

from django.db import migrations

INCREMENTAL = "experiments: refresh conversions"
FULL = "experiments: full conversions refresh"


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=10, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=INCREMENTAL,
        defaults={
            "task": "experiments.conversions_refresh_due",
            "interval": every,
            "kwargs": json.dumps({"full": False}),
            "description": "Turn new goal events into conversions for running, paused and recently stopped experiments.",
        },
    )
    nightly, _ = CrontabSchedule.objects.get_or_create(
        minute="45", hour="3", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=FULL,
        defaults={
            "task": "experiments.conversions_refresh_due",
            "crontab": nightly,
            "kwargs": json.dumps({"full": True}),
            "description": "Recompute every conversion (catches exposures logged long after the fact).",
        },
    )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[INCREMENTAL, FULL]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0002_snapshots_holdout_members_conversions"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(create, remove)]
