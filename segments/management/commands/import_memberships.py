from __future__ import annotations

from pathlib import Path
from typing import Any

from segments.importing import MEMBERSHIP_COLUMNS, ImportStats, import_memberships
from segments.management.commands._import import BadLineReport, ImportCommand


class Command(ImportCommand):
    help = (
        "Upsert membership terms from a CSV or JSON Lines file, keyed by (customer_id, plan, started_at). "
        "Columns/keys: " + ", ".join(MEMBERSHIP_COLUMNS) + ". The customers must exist. "
        "Bad lines are reported (exit status 2) while the valid ones load; re-running is safe."
    )
    noun = "memberships"

    def run_import(self, path: Path, report: BadLineReport, options: dict[str, Any]) -> ImportStats:
        return import_memberships(
            path,
            fmt=options["format"],
            on_error=report,
            progress=options["progress"],
            batch_size=options["batch_size"] or 1000,
        )
