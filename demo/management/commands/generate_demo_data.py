from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from demo.generator import DemoSpec, generate


def _day(value: str) -> dt.datetime:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.UTC)
    except ValueError:
        raise CommandError(f"--end: '{value}' is not a date (YYYY-MM-DD).") from None


class Command(BaseCommand):
    help = (
        "Write a deterministic synthetic business (customers.csv, events.jsonl, memberships.jsonl) into --out, "
        "for import_customers, import_events and import_memberships. The same --customers, --seed, --months "
        "and --end give the same files."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--customers", type=int, default=2000)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--months", type=int, default=18)
        parser.add_argument("--end", help="The business's 'now', YYYY-MM-DD (default: today, UTC).")
        parser.add_argument("--out", required=True, help="Directory to write the three files into.")
        parser.add_argument("--progress", action="store_true", default=None, help="Force the progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["customers"] < 1 or options["months"] < 1:
            raise CommandError("--customers and --months must be at least 1.")
        spec_args: dict[str, Any] = {
            "customers": options["customers"],
            "seed": options["seed"],
            "months": options["months"],
        }
        if options["end"]:
            spec_args["end"] = _day(options["end"])
        spec = DemoSpec(**spec_args)
        summary = generate(spec, Path(options["out"]), progress=options["progress"])
        self.stdout.write(
            f"{summary.customers} customers, {summary.events} events, {summary.memberships} memberships "
            f"({spec.start:%Y-%m-%d} to {spec.end:%Y-%m-%d}, seed {spec.seed}) in {options['out']}"
        )
