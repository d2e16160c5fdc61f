"""``manage.py run_demo``: the whole demo pipeline (see ``demo.pipeline``), then a summary."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from demo.delivery import NoWorker
from demo.pipeline import DemoOptions, run_demo, summary_text

EXIT_NOT_RECOVERED = 3


class Command(BaseCommand):
    help = (
        "Run the demo end to end on this database: a synthetic business (deterministic for --seed), its tiers and "
        "rule segments, one campaign of each kind with an experiment, deliveries through the Celery worker, "
        "simulated responses with planted effects, and the lift reports compared with what was planted. "
        "Idempotent: a second run creates nothing new. Needs a running worker (celery -A config worker) unless "
        "--inline."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--customers", type=int, default=50_000)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--months", type=int, default=18)
        parser.add_argument("--end", help="The business's 'now', YYYY-MM-DD (default: today, UTC, on the first run).")
        parser.add_argument(
            "--data-dir", default=None, help="Where the generated files go (default: GROWTH_VAR_DIR/demo-data)."
        )
        parser.add_argument(
            "--inline", action="store_true", help="Decide and send in this process instead of the Celery worker."
        )
        parser.add_argument("--settle-timeout", type=float, default=420.0, help="Seconds to wait for deliveries.")
        parser.add_argument("--processes", type=int, default=2, help="Processes generating the data.")
        parser.add_argument(
            "--progress", action=argparse.BooleanOptionalAction, default=None, help="Progress bars (default: on a tty)."
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help=f"Exit {EXIT_NOT_RECOVERED} unless every planted effect is recovered and nothing else is significant.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["customers"] < 100 or options["months"] < 1:
            raise CommandError("--customers must be at least 100 and --months at least 1.")
        end = None
        if options["end"]:
            try:
                end = dt.datetime.combine(dt.date.fromisoformat(options["end"]), dt.time(), tzinfo=dt.UTC)
            except ValueError:
                raise CommandError(f"--end: '{options['end']}' is not a date (YYYY-MM-DD).") from None
        demo_options = DemoOptions(
            data_dir=Path(options["data_dir"] or settings.VAR_DIR / "demo-data"),
            customers=options["customers"],
            seed=options["seed"],
            months=options["months"],
            end=end,
            deliver="inline" if options["inline"] else "worker",
            settle_timeout=options["settle_timeout"],
            progress=options["progress"],
            processes=max(1, options["processes"]),
        )

        def write(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        try:
            result = run_demo(demo_options, stdout=self.stdout, write=write)
        except NoWorker as exc:
            raise CommandError(str(exc)) from None
        if result.api_key:
            # For scripts/demo.sh to print beside the admin's address; readable by its owner only.
            path = Path(settings.VAR_DIR) / "demo-api-key.txt"
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(result.api_key + "\n")
        for line in summary_text(result, demo_options):
            self.stdout.write(line)
        clean = all(f.all_recovered and not f.false_positives for f in result.findings)
        if options["strict"] and not clean:
            sys.stdout.flush()
            raise CommandError("not every planted effect was recovered exactly", returncode=EXIT_NOT_RECOVERED)
