from __future__ import annotations

from pathlib import Path
from typing import Any

from segments.importing import CUSTOMER_COLUMNS, ImportStats, import_customers
from segments.management.commands._import import BadLineReport, ImportCommand


class Command(ImportCommand):
    help = (
        "Upsert customers from a CSV or JSON Lines file, keyed by external_id. Columns/keys: "
        + ", ".join(CUSTOMER_COLUMNS)
        + ". Sent fields are set, absent ones (and empty CSV cells) keep their stored value. "
        "Bad lines are reported (exit status 2) while the valid ones load; re-running is safe."
    )
    noun = "customers"

    def run_import(self, path: Path, report: BadLineReport, options: dict[str, Any]) -> ImportStats:
        return import_customers(
            path,
            fmt=options["format"],
            on_error=report,
            progress=options["progress"],
            batch_size=options["batch_size"] or 1000,
        )
