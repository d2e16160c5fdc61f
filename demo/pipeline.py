"""``make demo``, step by step: a synthetic business, its tiers, four campaigns with
experiments, deliveries through the worker, simulated responses with planted effects, and
the lift reports read against what was planted.

Steps (each timed; each idempotent, so a second run finds its work done and moves on):

1. **data**: generate the business into ``data_dir`` (``manifest.json`` pins the spec and
   its "now", so a later run reuses the same files);
2. **import**: ``import_customers``, ``import_memberships``, ``import_events`` (skipped
   when the database already holds every generated row);
3. **segments**: the rule segments; a recompute of every dimension and segment when the
   data changed;
4. **setup**: holdout, offers, experiments (started) and campaigns with treatments and
   content, by key;
5. **launch triggered**: the new-user and referral campaigns start listening; their
   cursors are brought past the imported history in this process (see
   ``demo.delivery.triggers_catch_up``);
6. **wave**: new sign-ups and referred friends after launch (one transaction), then a
   recompute so they sit in layers before the triggers decide for them;
7. **launch broadcasts**: renewal and win-back;
8. **deliver**: the worker resolves, decides and sends; the demo waits until settled;
9. **responses**: goal events with the planted effects (``demo.responses``);
10. **analyse**: conversions refreshed, lift reports built and compared with the plan.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from access.models import ApiKey, Scope
from access.services import api_key_create, api_key_revoke
from campaigns.models import Campaign
from campaigns.services.referrals import referral_code_get_or_create
from config.progress import progress_bar
from demo import configure, delivery, responses, summary
from demo.generator import DemoSpec, generate
from demo.plan import (
    CAMPAIGNS,
    HOLDOUT_PERCENT,
    OFFERS,
    SEGMENTS,
    TAG_RULES,
    WAVE,
    CampaignPlan,
    SegmentPlan,
    TagRulePlan,
    WavePlan,
)
from demo.wave import Inviter, wave_build
from experiments import selectors as experiment_selectors
from experiments import services as experiment_services
from experiments.reports.assemble import report_build
from segments.importing import RecordError, parse_customer, parse_event
from segments.importing.records import event_type_map
from segments.models import Customer, Dimension, Event, Membership, RecomputeRun, Segment, TagRule
from segments.selectors import audience_queryset, dimension_last_run, layer_ids_by_keys
from segments.services.ingestion import customers_upsert, events_record
from segments.services.recompute import recompute_all

DEMO_API_KEY_NAME = "demo (make demo)"
GENERATED_CUSTOMERS = ("cust-", "cust.")  # external id range of the generated customers
GENERATED_EVENTS = ("ev-", "ev.")
WAVE_MARKER = "wave-000000"
INGEST_BATCH = 1000


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path
    customers: int = 50_000
    seed: int = 42
    months: int = 18
    end: dt.datetime | None = None  # the business's "now" (default: today 00:00 UTC, pinned on first run)
    deliver: str = "worker"  # "worker": a Celery worker sends; "inline": this process does (tests)
    settle_timeout: float = 420.0
    progress: bool | None = None
    processes: int = 2
    campaigns: tuple[CampaignPlan, ...] = CAMPAIGNS
    segments: tuple[SegmentPlan, ...] = SEGMENTS
    tag_rules: tuple[TagRulePlan, ...] = TAG_RULES
    wave: WavePlan = WAVE
    wait_for_response_times: bool = True


@dataclass(frozen=True)
class StepTime:
    name: str
    seconds: float
    note: str


@dataclass(frozen=True)
class DemoResult:
    timings: tuple[StepTime, ...]
    findings: tuple[summary.Findings, ...]
    counts: dict[str, int]
    settled: bool
    responses: tuple[responses.ResponseStats, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    api_key: str = ""  # the demo's API key with every scope (raw; replaced at every run)
    analytics: tuple[str, ...] = ()  # retention, funnel and flows per tier, with their pages


class Pipeline:
    def __init__(self, options: DemoOptions, *, stdout: IO[str], write: Callable[[str], None]) -> None:
        self.o = options
        self.stdout = stdout
        self.write = write
        self.timings: list[StepTime] = []
        self.notes: list[str] = []

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        note: list[str] = []
        self.write(f"== {name}")
        started = time.monotonic()
        yield note
        elapsed = time.monotonic() - started
        self.timings.append(StepTime(name, elapsed, "; ".join(note)))
        self.write(f"   {elapsed:6.1f} s  {'; '.join(note)}")

    def _command(self, name: str, *args: str) -> None:
        kwargs: dict[str, Any] = {"stdout": self.stdout}
        if self.o.progress is not None:
            kwargs["progress"] = self.o.progress
        call_command(name, *args, **kwargs)

    # --- 1-3: data ----------------------------------------------------------------------------

    def data(self) -> dict[str, Any]:
        with self.step("data: generate the business") as note:
            path = self.o.data_dir / "manifest.json"
            wanted = {"customers": self.o.customers, "seed": self.o.seed, "months": self.o.months}
            files = [self.o.data_dir / n for n in ("customers.csv", "events.jsonl", "memberships.jsonl")]
            manifest = json.loads(path.read_text()) if path.is_file() else None
            if manifest and all(manifest.get(k) == v for k, v in wanted.items()) and all(f.is_file() for f in files):
                note.append(f"reused {self.o.data_dir} (business 'now' {manifest['end'][:10]})")
                return manifest
            end = self.o.end or timezone.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            spec = DemoSpec(customers=self.o.customers, seed=self.o.seed, months=self.o.months, end=end)
            result = generate(spec, self.o.data_dir, progress=self.o.progress, processes=self.o.processes)
            manifest = {**wanted, "end": end.isoformat(), "events": result.events, "memberships": result.memberships}
            path.write_text(json.dumps(manifest, indent=2) + "\n")
            note.append(f"{result.customers:,} customers, {result.events:,} events, {result.memberships:,} memberships")
            return manifest

    def load(self, manifest: dict[str, Any]) -> bool:
        with self.step("import: customers, memberships, events") as note:
            have_customers = Customer.objects.filter(
                external_id__gte=GENERATED_CUSTOMERS[0], external_id__lt=GENERATED_CUSTOMERS[1]
            ).count()
            have_events = Event.objects.filter(
                event_id__gte=GENERATED_EVENTS[0], event_id__lt=GENERATED_EVENTS[1]
            ).count()
            if (
                have_customers == manifest["customers"]
                and have_events == manifest["events"]
                and Membership.objects.count() >= manifest["memberships"]
            ):
                note.append("already imported")
                return False
            d = self.o.data_dir
            if configure.marketplace_event_types_ensure():
                note.append(f"added event type '{configure.SALE_EVENT}' (the sellers' sales)")
            self._command("import_customers", str(d / "customers.csv"))
            self._command("import_memberships", str(d / "memberships.jsonl"))
            self._command("import_events", str(d / "events.jsonl"))
            note.append(f"{manifest['customers']:,} customers, {manifest['events']:,} events")
            return True

    def recompute(self, note: list[str]) -> None:
        # Target by target (what recompute_all does in one call, in the same order) so a long
        # recompute reports its progress (config.progress).
        from segments.services.tags import tag_rule_order

        dimension_keys = list(Dimension.objects.filter(is_active=True).order_by("key").values_list("key", flat=True))
        tag_codes = tag_rule_order(list(TagRule.objects.filter(is_active=True).values_list("tag__code", flat=True)))
        segment_keys = list(Segment.objects.filter(is_active=True).order_by("key").values_list("key", flat=True))
        outcomes = []
        targets = (("dimension_keys", dimension_keys), ("tag_codes", tag_codes), ("segment_keys", segment_keys))
        with progress_bar(
            total=sum(len(keys) for _, keys in targets), desc="recompute", unit="target", enabled=self.o.progress
        ) as bar:
            for kind, keys in targets:
                for key in keys:
                    bar.set_postfix_str(f"now {key}", refresh=False)
                    outcomes += recompute_all(trigger=RecomputeRun.Trigger.COMMAND, **{kind: [key]})
                    bar.update(1)
        failed = [o.target for o in outcomes if o.status == "failed"]
        if failed:
            raise RuntimeError(f"demo: recompute failed for {', '.join(failed)} (see the runs in the admin)")
        note.append(f"recomputed {len(outcomes)} dimensions, tag rules and segments")

    def segments(self, *, data_changed: bool) -> None:
        with self.step("segments: the buyer and seller value pyramids and a year of monthly tier history") as note:
            for key in configure.value_pyramid_ensure():
                note.append(f"created dimension '{key}'")
            runs = configure.tier_history_backfill(now=timezone.now())
            history = ", ".join(configure.HISTORY_DIMENSIONS)
            note.append(f"{runs} monthly recomputes of {history}" if runs else "up to date")
        with self.step("segments: tag rules, rule segments and every dimension") as note:
            tags_created = configure.tag_rules_ensure(plans=self.o.tag_rules)
            created = configure.segments_ensure(plans=self.o.segments)
            never = [
                pk
                for pk in Dimension.objects.filter(is_active=True).values_list("pk", flat=True)
                if dimension_last_run(dimension_id=pk) is None
            ]
            if data_changed or created or tags_created or never:
                self.recompute(note)
            else:
                note.append("up to date")
            if tags_created:
                note.append(f"created {len(tags_created)} tag rules")
            if created:
                note.append(f"created {len(created)} rule segments")

    # --- 4-7: campaigns -------------------------------------------------------------------------

    def setup(self) -> dict[str, Campaign]:
        with self.step("setup: holdout, offers, experiments, campaigns") as note:
            holdout = configure.holdout_ensure()
            offers = configure.offers_ensure(plans=OFFERS)
            campaigns = {}
            for plan in self.o.campaigns:
                experiment = configure.experiment_ensure(plan=plan.experiment, holdout=holdout)
                campaigns[plan.key] = configure.campaign_ensure(plan=plan, experiment=experiment, offers=offers)
            note.append(f"{len(offers)} offers, {len(campaigns)} experiments and campaigns")
            return campaigns

    def launch(self, campaigns: Sequence[Campaign], label: str) -> None:
        with self.step(f"launch {label}") as note:
            launches = configure.campaigns_launch(campaigns=campaigns)
            launched = [launch.key for launch in launches if launch.launched]
            note.append(f"launched {', '.join(launched)}" if launched else "running already")
            triggered = [c.pk for c in campaigns if c.is_triggered]
            if triggered and launched:
                read = delivery.triggers_catch_up(campaign_ids=triggered)
                note.append(f"trigger cursors past {read:,} imported events")

    def _inviters(self, count: int) -> list[Inviter]:
        """Existing active or core customers without a membership, chosen by a hash of their id."""
        layers = layer_ids_by_keys(keys=["lifecycle:active", "lifecycle:core", "expiry:none"])
        candidates = audience_queryset(include_layer_ids=list(layers.values())).values_list("external_id", flat=True)
        ranked = sorted(candidates.iterator(), key=lambda ext: responses.uniform(self.o.seed, "inviter", ext))
        chosen = Customer.objects.filter(external_id__in=ranked[:count]).in_bulk(field_name="external_id")
        return [Inviter(ext, referral_code_get_or_create(customer=chosen[ext]).code) for ext in ranked[:count]]

    def wave(self, anchor: dt.datetime) -> bool:
        with self.step("wave: new sign-ups and referred friends after launch") as note:
            if Customer.objects.filter(external_id=WAVE_MARKER).exists():
                note.append("ingested before")
                return False
            signups, invitees = self.o.wave.signups(self.o.customers), self.o.wave.invitees(self.o.customers)
            with transaction.atomic():
                inviters = self._inviters(-(-invitees // self.o.wave.invitees_per_inviter))
                built = wave_build(
                    seed=self.o.seed,
                    signups=signups,
                    invitees=invitees,
                    inviters=inviters,
                    anchor=anchor,
                    super_referrer_invitees=self.o.wave.super_referrer_invitees,
                )
                self._ingest(built.customers, built.events)
            note.append(
                f"{signups:,} sign-ups, {len(built.customers) - signups:,} friends of {len(inviters):,} inviters"
            )
            return True

    def _ingest(self, customers: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> None:
        types = event_type_map()
        try:
            # As the CSV reader hands them over: an empty cell is an absent field.
            parsed_customers = [
                parse_customer({k: v for k, v in row.items() if v != ""}, text=True) for row in customers
            ]
            parsed_events = [parse_event(row, event_types=types) for row in events]
        except RecordError as exc:
            raise RuntimeError(f"demo: the wave has an invalid record: {exc}") from exc
        for start in range(0, len(parsed_customers), INGEST_BATCH):
            customers_upsert(customers=parsed_customers[start : start + INGEST_BATCH])
        for start in range(0, len(parsed_events), INGEST_BATCH):
            result = events_record(events=parsed_events[start : start + INGEST_BATCH])
            if result.errors:
                first = result.errors[0]
                raise RuntimeError(f"demo: wave event refused: {first.field}: {first.message}")

    # --- 8-10 -----------------------------------------------------------------------------------

    def deliver(self, campaigns: Sequence[Campaign]) -> bool:
        with self.step(
            f"deliver: {'through the Celery worker' if self.o.deliver == 'worker' else 'in process'}"
        ) as note:
            ids = [c.pk for c in campaigns]
            if self.o.deliver == "inline":
                state, settled = delivery.drive_inline(campaign_ids=ids), True
            else:
                state, settled = delivery.drive_worker(
                    campaign_ids=ids, timeout=self.o.settle_timeout, progress=self.o.progress
                )
            by = state.by_status
            note.append(
                f"{by.get('sent', 0):,} sent, {by.get('held', 0):,} held for quiet hours, "
                f"{by.get('failed', 0):,} failed, {by.get('suppressed', 0):,} suppressed "
                "(control, holdout, consent, caps)"
            )
            if not settled:
                message = (
                    f"deliveries not settled after {self.o.settle_timeout:.0f} s ({state.due:,} still due): the "
                    "responses see only what was sent so far"
                )
                self.notes.append(message)
                note.append("NOT SETTLED: " + message)
            return settled

    def simulate(self) -> list[responses.ResponseStats]:
        with self.step("responses: goal events with the planted effects") as note:
            if self.o.wait_for_response_times:
                self._wait_for_response_times()
            stats = [responses.responses_simulate(plan=plan, seed=self.o.seed) for plan in self.o.campaigns]
            note.append(
                f"{sum(s.conversions for s in stats):,} conversions ({sum(s.created for s in stats):,} new events), "
                f"{sum(s.redeemed for s in stats):,} coupons redeemed"
            )
            return stats

    def _wait_for_response_times(self) -> None:
        """Response events are dated up to ``MAX_DELAY_SECONDS`` after a first exposure; wait
        until that moment has passed so no event is dated in the future."""
        from experiments.models import Assignment

        latest = (
            Assignment.objects.filter(experiment__key__in=[p.experiment.key for p in self.o.campaigns])
            .order_by("-first_exposed_at")
            .values_list("first_exposed_at", flat=True)
            .first()
        )
        if latest is not None:
            wait = (latest - timezone.now()).total_seconds() + responses.MAX_DELAY_SECONDS
            if wait > 0:
                time.sleep(wait)

    def analyse(self) -> list[summary.Findings]:
        with self.step("analyse: conversions and lift reports") as note:
            findings = []
            for plan in self.o.campaigns:
                experiment = experiment_selectors.experiment_get(key=plan.experiment.key)
                experiment_services.conversions_refresh(experiment=experiment, full=True)
                # Responses come within MAX_DELAY_SECONDS of exposure: every window is complete
                # although not yet closed by the clock, so none is left out as "open".
                report = report_build(experiment_key=plan.experiment.key, adjustment="holm", exclude_open_windows=False)
                findings.append(summary.findings_from_report(plan=plan, report=report))
            recovered = sum(p.recovered for f in findings for p in f.planted)
            planted = sum(len(f.planted) for f in findings)
            false = sum(len(f.false_positives) for f in findings)
            note.append(f"{recovered} of {planted} planted effects recovered, {false} false positives")
            return findings

    def api_key(self) -> str:
        """A key with every scope, so the API docs (/api/docs/) can be tried. Only its hash is
        stored, so a run cannot show the previous run's key: each run revokes the demo's key
        and creates a new one (one active demo key at a time)."""
        with self.step("api key: one with every scope, for the API docs") as note:
            revoked = [api_key_revoke(api_key=k) for k in ApiKey.objects.active().filter(name=DEMO_API_KEY_NAME)]
            key, raw = api_key_create(name=DEMO_API_KEY_NAME, scopes=Scope.values)
            note.append(f"'{key.name}' with {len(key.scopes)} scopes" + (", the previous revoked" if revoked else ""))
            return raw

    def run(self) -> DemoResult:
        manifest = self.data()
        imported = self.load(manifest)
        self.segments(data_changed=imported)
        campaigns = self.setup()
        triggered = [campaigns[p.key] for p in self.o.campaigns if p.is_triggered]
        broadcasts = [campaigns[p.key] for p in self.o.campaigns if not p.is_triggered]
        self.launch(triggered, "triggered campaigns (new-user, referral)")
        anchor = min(Campaign.objects.get(pk=c.pk).started_at for c in triggered) if triggered else timezone.now()
        if self.wave(anchor):
            with self.step("segments: place the newcomers in layers") as note:
                self.recompute(note)
        self.launch(broadcasts, "broadcasts (renewal, win-back)")
        settled = self.deliver(list(campaigns.values()))
        stats = self.simulate()
        findings = self.analyse()
        raw_key = self.api_key()
        with self.step("analytics: retention, funnel and flows by tier") as note:
            analytics = tuple(
                summary.analytics_text(pyramid_keys=(configure.VALUE_PYRAMID_KEY, configure.SELLER_PYRAMID_KEY))
            )
            note.append("see the summary")
        counts = summary.demo_counts(campaigns=self.o.campaigns, segments=self.o.segments)
        return DemoResult(
            tuple(self.timings),
            tuple(findings),
            counts,
            settled,
            tuple(stats),
            tuple(self.notes),
            raw_key,
            analytics,
        )


def run_demo(options: DemoOptions, *, stdout: IO[str], write: Callable[[str], None]) -> DemoResult:
    return Pipeline(options, stdout=stdout, write=write).run()


# --- The printed summary ------------------------------------------------------------------------


def summary_text(result: DemoResult, options: DemoOptions) -> list[str]:
    c = result.counts
    sizes = summary.segment_sizes(segments=options.segments)
    audit = summary.referral_audit_counts(campaign_key="demo-referral")
    lines = [
        "",
        "Demo summary",
        f"  business: {c['customers']:,} customers, {c['events']:,} events, {c['memberships']:,} membership terms",
        "  rule segments: " + ", ".join(f"{k} ({n:,})" for k, n in sizes.items()),
        f"  campaigns: {c['campaigns']} running, each split by an experiment ({c['assignments']:,} assignments, "
        f"{c['exposed']:,} exposed; {HOLDOUT_PERCENT}% global holdout):",
        *(
            f"    {p.name} ({p.key}; {'on ' + str(p.trigger_event) if p.is_triggered else 'broadcast'}; "
            f"{', '.join(p.channels)}): {p.experiment.key}, variants {' / '.join(v.key for v in p.experiment.variants)}"
            for p in options.campaigns
        ),
        f"  decisions: {c['recipients']:,} (treated, control and holdout alike); deliveries {c['deliveries']:,}: "
        + ", ".join(f"{k.split(':', 1)[1]} {v:,}" for k, v in sorted(c.items()) if k.startswith("deliveries:")),
        "  mailbox (admin > Mailbox messages): "
        + (
            ", ".join(f"{k.split(':', 1)[1]} {v:,}" for k, v in sorted(c.items()) if k.startswith("mailbox:"))
            or "empty"
        ),
        f"  coupons: {c['coupons']:,} issued, {c['coupons_redeemed']:,} redeemed; referrals: {c['referrals']:,} "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(audit.items()))})",
        f"  conversions: {c['conversions']:,}",
        "",
        "What the lift reports found against what was planted (primary metric; significant: Holm-adjusted p < 0.05",
        "within each experiment's confirmatory family: variants x (all customers + the planted dimension's layers)).",
        "A planted effect lifts the goal rate of",
        "customers a treated variant's message reached; the reports compare everyone assigned (intent to treat), so",
        "they should see about the planted lift x the share reached (intervals: 95%, not multiplicity-adjusted):",
    ]
    by_campaign = {s.campaign: s for s in result.responses}
    for findings in result.findings:
        stats = by_campaign.get(findings.campaign)
        reach = {cell: (r / n if n else 0.0) for cell, (n, r, _) in stats.by_cell.items()} if stats else None
        lines += summary.findings_text(findings, reach=reach)
    lines += ["", summary.verdict_text(result.findings)]
    lines += list(result.analytics)
    lines += [f"  note: {n}" for n in result.notes]
    if result.api_key:
        lines += ["", f"API key (every scope; a new one each run, the previous revoked): {result.api_key}"]
    lines += ["", "Timings:"] + [f"  {t.seconds:7.1f} s  {t.name}" for t in result.timings]
    lines.append(f"  {sum(t.seconds for t in result.timings):7.1f} s  total")
    return lines
