"""PostgreSQL only: ``event_cust_type_time_idx`` carries ``amount`` (``INCLUDE``), so a
per-customer aggregate of one event type in a window (a rule's ``sum``/``first``/``last``,
``share``) reads the index alone (an index-only scan) instead of one heap page per event.

Why: a rule segment's fill runs one correlated probe per candidate customer; each probe
found its events in this index and then fetched every one from the table's heap, where a
customer's events lie on unrelated pages. Measured on bench/segments.py data (10 events per
customer, server shared_buffers 1 GB, 2026-12-06): at 250k customers the index and heap the
probes touch fit in shared_buffers (~400 buffer reads per fill), at 1M (events heap 957 MB +
this index 509 MB) they do not, and every fill re-read ~262k pages from the OS cache: 0.65-0.75 s
at 250k, 3.4-3.9 s at 1M (k = 1.2 between the two; with shared_buffers 3 GB the same fills
took 0.66 / 2.6 s, k = 1.0). With ``amount`` in the index the probe never visits the heap:
0.53-0.57 s at 250k, 2.2-2.3 s at 1M, no buffer read at either size.

The index keeps its name and key columns, so every plan that used it still can; it grows by
the amount of the rows that have one (orders), and a freshly built copy at 1M was 473 MB.
On a partitioned ``segments_event`` the parent's index is rebuilt on every partition (new
monthly partitions inherit it), under the table's lock: on a large install run it in a quiet
window. SQLite has no ``INCLUDE`` and keeps its index; Django's model state is unchanged
(``Event.Meta`` declares the key columns; ``Index(include=…)`` would make Django skip the
index on SQLite).
"""

from django.db import migrations

COLUMNS = "segments_event (customer_id, event_type_id, occurred_at)"


def _rebuild(schema_editor, include: str) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS event_cust_type_time_idx")
    schema_editor.execute(f"CREATE INDEX event_cust_type_time_idx ON {COLUMNS}{include}")


def forwards(apps, schema_editor):
    _rebuild(schema_editor, " INCLUDE (amount)")


def backwards(apps, schema_editor):
    _rebuild(schema_editor, "")


class Migration(migrations.Migration):
    dependencies = [
        ("segments", "0014_analytics_runs_purge_schedule"),
    ]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
