"""Shared plumbing of the ``import_*`` commands (Django skips modules starting with ``_``)."""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from segments.importing import ImportFileError, ImportStats

SHOWN_ERRORS = 50
EXIT_SOME_REJECTED = 2
IMPORT_BATCH_HELP = (
    "Rows per write (default 1,000; events: 10,000 per transaction on SQLite, 50,000 per COPY chunk on PostgreSQL)."
)


class BadLineReport:
    """Every bad line (number, field, reason): the first few on stderr, all of them in
    ``--report FILE`` (CSV, or JSON Lines when the name ends in .json/.jsonl), streamed."""

    def __init__(self, command: BaseCommand, path: str | None) -> None:
        self.command, self.count = command, 0
        self.file: IO[str] | None = None
        self.writer: Any = None
        self.as_json = False
        if path:
            self.file = Path(path).open("w", encoding="utf-8", newline="")
            self.as_json = Path(path).suffix.lower() in (".json", ".jsonl")
            if not self.as_json:
                self.writer = csv.writer(self.file)
                self.writer.writerow(["line", "field", "reason"])

    def __call__(self, line: int, field: str, message: str) -> None:
        self.count += 1
        if self.count <= SHOWN_ERRORS:
            self.command.stderr.write(f"line {line}: {field or '(line)'}: {message}")
        if self.file is not None:
            if self.as_json:
                self.file.write(json.dumps({"line": line, "field": field, "reason": message}) + "\n")
            else:
                self.writer.writerow([line, field, message])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class ImportCommand(BaseCommand):
    noun = "records"
    # The system checks (URL config, admin, DRF, deploy settings) run at every deploy and
    # in CI; here they cost ~1.4 s of CPU and ~7 s of wall time on a loaded 2-core box
    # before the first line is read (py-spy on import_events), for nothing an import uses.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="A .csv or .jsonl file (any size; read as a stream).")
        parser.add_argument("--format", choices=["csv", "jsonl"], help="Default: from the file name.")
        parser.add_argument("--report", metavar="FILE", help="Write every bad line to FILE (.csv or .jsonl).")
        parser.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Show a progress bar (default: on a terminal).",
        )
        parser.add_argument("--batch-size", type=int, default=None, help=IMPORT_BATCH_HELP)

    def run_import(self, path: Path, report: BadLineReport, options: dict[str, Any]) -> ImportStats:
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        report = BadLineReport(self, options["report"])
        started = time.monotonic()
        try:
            stats = self.run_import(path, report, options)
        except ImportFileError as exc:
            raise CommandError(f"{path}: {exc} Nothing was imported.") from None
        finally:
            report.close()
        elapsed = time.monotonic() - started
        summary = (
            f"{path.name}: {stats.lines} {self.noun} read in {elapsed:.1f}s: {stats.created} created, "
            f"{stats.updated} updated, {stats.duplicates} already stored, {stats.rejected} rejected."
        )
        self.stdout.write(summary)
        if stats.rejected:
            more = f" ({report.count - SHOWN_ERRORS} more not shown)" if report.count > SHOWN_ERRORS else ""
            where = f"; all of them are in {options['report']}" if options["report"] else ""
            raise CommandError(
                f"{stats.rejected} line(s) were rejected{more}{where}. The valid lines were imported.",
                returncode=EXIT_SOME_REJECTED,
            )
