"""Schedule the daily purge of analytics runs older than GROWTH_ANALYTICS_RUN_KEEP_DAYS
(``segments.analytics_runs_purge``, on the ``reports`` queue)."""

from django.db import migrations

TASK_NAME = "segments: analytics runs purge"


def schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="45", hour="1", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "segments.analytics_runs_purge",
            "crontab": crontab,
            "description": "Delete analytics runs (retention tables, funnels asked as a task) older than "
            "GROWTH_ANALYTICS_RUN_KEEP_DAYS.",
        },
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("segments", "0013_analytics_run"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(schedule, unschedule)]
