"""``manage.py recompute_segments [--dimension KEY]... [--tag CODE]... [--segment KEY]... [--as-of ISO]``

Without options: every active dimension, then every active tag rule, then every active segment. Prints one JSON line
per target; exits 1 when any target failed (a target already running is skipped, not an
error).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from segments.models import Dimension, RecomputeRun, Segment, TagRule
from segments.services.recompute import dimension_recompute, recompute_all


class Command(BaseCommand):
    help = "Recompute dimensions (computed tiers) and rule segments inside the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dimension", action="append", default=[], metavar="KEY", help="Only this dimension.")
        parser.add_argument("--tag", action="append", default=[], metavar="CODE", help="Only this tag rule.")
        parser.add_argument("--segment", action="append", default=[], metavar="KEY", help="Only this segment.")
        parser.add_argument("--as-of", help="Compute as of this ISO 8601 instant (default: now).")
        parser.add_argument(
            "--full-tags", action="store_true", help="Reconcile every customer's tier tags, not only movers'."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        as_of = None
        if options["as_of"]:
            try:
                as_of = dt.datetime.fromisoformat(options["as_of"])
            except ValueError:
                raise CommandError(f"--as-of: '{options['as_of']}' is not an ISO 8601 date-time") from None
            if as_of.tzinfo is None:
                as_of = as_of.replace(tzinfo=dt.UTC)
        dimension_keys, segment_keys, tag_codes = options["dimension"], options["segment"], options["tag"]
        unknown = sorted(set(dimension_keys) - set(Dimension.objects.values_list("key", flat=True)))
        unknown += sorted(set(tag_codes) - set(TagRule.objects.values_list("tag__code", flat=True)))
        unknown += sorted(set(segment_keys) - set(Segment.objects.values_list("key", flat=True)))
        if unknown:
            raise CommandError(f"unknown dimension/tag rule/segment key(s): {', '.join(unknown)}")
        trigger = RecomputeRun.Trigger.COMMAND
        if options["full_tags"]:
            keys = dimension_keys or list(Dimension.objects.filter(is_active=True).values_list("key", flat=True))
            outcomes = [
                dimension_recompute(dimension_id=pk, as_of=as_of, trigger=trigger, full_tags=True)
                for pk in Dimension.objects.filter(key__in=keys).order_by("key").values_list("pk", flat=True)
            ]
            if segment_keys or tag_codes:
                outcomes += recompute_all(as_of=as_of, trigger=trigger, segment_keys=segment_keys, tag_codes=tag_codes)
        elif dimension_keys or segment_keys or tag_codes:
            outcomes = recompute_all(
                as_of=as_of,
                trigger=trigger,
                dimension_keys=dimension_keys,
                segment_keys=segment_keys,
                tag_codes=tag_codes,
            )
        else:
            outcomes = recompute_all(as_of=as_of, trigger=trigger)
        for outcome in outcomes:
            self.stdout.write(json.dumps(outcome.as_dict()))
        failed = [o.target for o in outcomes if o.status == "failed"]
        if failed:
            raise CommandError(f"recompute failed for: {', '.join(failed)} (see the runs in the admin)")
