from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from segments.importing import EVENT_COLUMNS, ImportStats, import_events
from segments.management.commands._import import BadLineReport, ImportCommand
from segments.services.ingestion import UNKNOWN_CUSTOMER_RULES


class Command(ImportCommand):
    help = (
        "Record events from a CSV or JSON Lines file. Columns/keys: "
        + ", ".join(EVENT_COLUMNS)
        + " (properties: a JSON object). Idempotent by event_id: re-running stores nothing twice, and an "
        "event_id stored with a different body is reported. On PostgreSQL rows stream through COPY. "
        "Bad lines are reported (exit status 2) while the valid ones load."
    )
    noun = "events"

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--unknown-customers",
            choices=UNKNOWN_CUSTOMER_RULES,
            help="Events for customers not stored yet: reject the line, or create the customer. "
            "Default: settings.GROWTH['UNKNOWN_CUSTOMER_EVENTS'] (GROWTH_UNKNOWN_CUSTOMER_EVENTS, 'reject').",
        )

    def run_import(self, path: Path, report: BadLineReport, options: dict[str, Any]) -> ImportStats:
        return import_events(
            path,
            fmt=options["format"],
            on_error=report,
            progress=options["progress"],
            unknown_customers=options["unknown_customers"],
            batch_size=options["batch_size"],
        )
