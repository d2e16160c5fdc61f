"""``manage.py archive_events --before 2025-01 --to /srv/archive/events``

PostgreSQL only. Detaches every monthly events partition older than ``--before`` (a
month, ``YYYY-MM``, not later than the current month), writes each to
``<to>/segments_event_pYYYYMM.csv.gz`` (``COPY`` CSV with a header; load it back with
``\\copy … FROM PROGRAM 'zcat …' CSV HEADER`` into a table of the same shape) and drops it
(``--keep-tables`` leaves the detached tables instead). Event ids of archived events stay
claimed, so a client re-sending one gets "duplicate". ``--list`` shows the partitions and
how many events the default partition holds; months of imported history still there get
their own partitions before archiving.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from segments.services.partitions import (
    DEFAULT,
    default_partition_rows,
    event_partitions,
    event_partitions_archive,
    is_partitioned,
)


def _month(value: str) -> dt.date:
    try:
        return dt.datetime.strptime(value, "%Y-%m").date()
    except ValueError as error:
        raise CommandError(f"--before: expected a month as YYYY-MM, got {value!r}.") from error


class Command(BaseCommand):
    help = "Detach monthly event partitions older than a month, archive each to a .csv.gz file, drop them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--before", help="Archive the months before this one (YYYY-MM).")
        parser.add_argument("--to", dest="directory", help="Directory for the .csv.gz files (created if missing).")
        parser.add_argument("--keep-tables", action="store_true", help="Detach and export, but keep the tables.")
        parser.add_argument("--list", action="store_true", help="List the monthly partitions and stop.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not is_partitioned():
            raise CommandError("The events table is not partitioned (PostgreSQL only): nothing to archive.")
        if options["list"]:
            for partition in event_partitions():
                self.stdout.write(f"{partition.name}\t{partition.month:%Y-%m}\t~{partition.rows_estimate} rows")
            # Old months found here are split out by the daily task or by --before first.
            self.stdout.write(f"{DEFAULT}\tno month\t{default_partition_rows()} rows")
            return
        if not options["before"] or not options["directory"]:
            raise CommandError("--before YYYY-MM and --to DIRECTORY are required (or --list).")
        try:
            archived = event_partitions_archive(
                before=_month(options["before"]), directory=Path(options["directory"]), drop=not options["keep_tables"]
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        for item in archived:
            self.stdout.write(f"{item.name}: {item.rows} rows -> {item.path}")
        self.stdout.write(f"Archived {len(archived)} partition(s).")
