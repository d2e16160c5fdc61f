"""The partition task on either database: the beat runs it on SQLite installs too."""

from __future__ import annotations

import pytest

from segments.tasks import event_partitions_ensure


@pytest.mark.django_db
def test_event_partitions_ensure_task__run_twice__second_run_creates_nothing() -> None:
    # SQLite: one table, nothing to create. PostgreSQL: the months ahead exist after the
    # first run (the migration made them), so neither run fails and the second is a no-op.
    event_partitions_ensure()
    assert event_partitions_ensure() == []
