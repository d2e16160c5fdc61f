"""Joins two branches of this round: tag rules (0006_tag_rules) and the partitioned event
store with bulk tables without foreign-key constraints (0006_event_partitions, 0007). They
touch different columns; no operation is needed."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("segments", "0006_tag_rules"),
        ("segments", "0007_bulk_rows_without_fk_constraints"),
    ]

    operations = []
