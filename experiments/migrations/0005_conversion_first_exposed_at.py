"""Conversions carry their window's start (the assignment's first exposure), so a lift
report can leave out customers whose window is still open without joining the
assignments; existing rows are filled in with one set-based UPDATE."""

from django.db import migrations, models


def backfill(apps, schema_editor):  # type: ignore[no-untyped-def]
    Conversion = apps.get_model("experiments", "Conversion")
    Assignment = apps.get_model("experiments", "Assignment")
    conversion = schema_editor.quote_name(Conversion._meta.db_table)
    assignment = schema_editor.quote_name(Assignment._meta.db_table)
    schema_editor.execute(
        f"UPDATE {conversion} SET first_exposed_at = (SELECT a.first_exposed_at FROM {assignment} a"
        f" WHERE a.id = {conversion}.assignment_id)"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0004_bulk_rows_without_db_constraints"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversion",
            name="first_exposed_at",
            field=models.DateTimeField(
                blank=True,
                help_text=(
                    "The assignment's first exposure this conversion was computed from (its window's start), "
                    "so a report can leave out customers whose window is still open without a join; rewritten "
                    "when the first exposure moves. Null only on rows written outside the engine."
                ),
                null=True,
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
