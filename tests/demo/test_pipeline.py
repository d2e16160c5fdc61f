"""The demo's own tests: the pipeline behind ``make demo`` recovers exactly what it plants.

``test_run_demo__...`` runs the real plan (``demo.plan``: the same campaigns, experiments,
baselines and planted effects as ``make demo``) in this process, deliveries decided and
sent inline, at the smallest business size whose lift reports recover every planted effect
for this seed (see ``SCALE``), and asserts that the Holm-significant layers are exactly the
planted ones; then it runs the pipeline again and asserts that nothing was created.

``test_demo_script__...`` runs ``scripts/demo.sh`` itself, as ``make demo`` does (SQLite
under its own var directory, the file broker, a real Celery worker process delivering
into the database mailbox), at a tiny size where the statistics mean nothing: it proves
the worker path and the script work end to end.

Both run only in the SQLite pass: the demo targets the embedded default (``demo.sh``
always runs on SQLite and the file broker, whatever the environment says).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.core.cache.backends.filebased import FileBasedCache

from access.models import Scope
from config.health import HEARTBEAT_KEY
from demo.pipeline import DemoOptions, DemoResult, run_demo, summary_text
from demo.plan import CAMPAIGNS

pytestmark = pytest.mark.skipif(
    settings.IS_POSTGRES, reason="the demo targets the embedded default: it runs in the SQLite pass"
)

ROOT = Path(__file__).resolve().parents[2]
SEED = 42
# The smallest business (a multiple of 5,000) at which every planted effect of the real
# plan is recovered for this seed; below it the smallest planted cells (win-back's
# churn-warning layer, the referred friends) are too small for the Holm-adjusted test.
SCALE = 20_000
# The business's "now" and the moment the campaigns run, pinned: quiet hours and the
# tiers depend on the time of day and on the date, and the test must not.
END = dt.datetime(2025, 6, 2, tzinfo=dt.UTC)
RUN_AT = END + dt.timedelta(hours=13)
MAILBOX = {
    "EMAIL_BACKEND": "campaigns.mailbox.DatabaseMailboxBackend",
    "SMS_BACKEND": "campaigns.channels.mailbox.SmsMailboxBackend",
    "PUSH_BACKEND": "campaigns.channels.mailbox.PushMailboxBackend",
}


def _retention_by_channel() -> dict[str, float]:
    """Day-7 retention ("on or after", a year of sign-up months) of paid search + social and
    of email + partner sign-ups, pooled from the per-channel headlines."""
    from segments.analytics.retention import RetentionSpec, retention_table

    table = retention_table(
        spec=RetentionSpec(
            cohort_grain="month",
            periods=7,
            cohort_from=(END - dt.timedelta(days=365)).date(),
            breakdown="attribute:channel",
        )
    )
    d7 = {g.layer: next(h for h in g.headlines if h.day == 7) for g in table.by_layer}

    def pooled(channels: tuple[str, ...]) -> float:
        return sum(d7[c].retained_on_or_after or 0 for c in channels) / sum(d7[c].eligible for c in channels)

    return {"paid": pooled(("paid_search", "social")), "owned": pooled(("email", "partner"))}


def _run(tmp_path: Path) -> tuple[DemoResult, list[str]]:
    options = DemoOptions(
        data_dir=tmp_path / "demo-data", customers=SCALE, seed=SEED, end=END, deliver="inline", progress=False
    )
    lines: list[str] = []
    result = run_demo(options, stdout=io.StringIO(), write=lines.append)
    return result, lines + summary_text(result, options)


@pytest.mark.django_db
def test_run_demo__seeded_business__significant_layers_are_the_planted_ones_and_a_rerun_creates_nothing(
    tmp_path: Path, settings: Any
) -> None:
    settings.CAMPAIGNS = {**(getattr(settings, "CAMPAIGNS", None) or {}), **MAILBOX}
    with time_machine.travel(RUN_AT, tick=True):
        # Given / When: the whole demo, once
        first, text = _run(tmp_path)

        # Then: every planted effect is found (a significant win in its cell), and no other
        # cell of any Holm family is significant
        assert first.settled
        assert [f.campaign for f in first.findings] == [p.key for p in CAMPAIGNS]
        for plan, findings in zip(CAMPAIGNS, first.findings, strict=True):
            assert findings.significant_cells == plan.planted(), "\n".join(text)
            assert findings.all_recovered and not findings.false_positives
        assert "RESULT: all 6 planted effects recovered" in "\n".join(text)
        # ... and the planted value effect (issue 15): the new-user coupon lifts conversion but
        # into trial-size baskets; the summary reads the revenue metric (converted to EUR by
        # the declared rates) and shows revenue per customer lower in the coupon arm. (At
        # this scale, ~200 new users per arm, the fall is not significant: measured -2.89
        # EUR [-6.10, +0.33]; the summary says so rather than "caught". Power worked out:
        # planted fall 0.74 reached x (0.10 - 0.28 x 0.1) x 53.9 EUR = 2.87 EUR, SE ~1.6 EUR,
        # ~31% at Holm's first step, so only the sign is asserted; at the default 50,000
        # customers, SE ~1.0, ~70%, and `make demo` with seed 42 catches it, p 0.0001.)
        new_user = next(f for f in first.findings if f.campaign == "demo-new-user")
        assert len(new_user.value_lines) == 1 and "(order:sum, EUR)" in new_user.value_lines[0], "\n".join(text)
        assert new_user.value_lifts[0] is not None and new_user.value_lifts[0] < 0
        # ... through deliveries that really went out, into the mailbox, with coupons redeemed
        counts = first.counts
        assert counts["campaigns"] == counts["experiments"] == 4
        assert counts["deliveries:sent"] > 0 and counts["mailbox"] == counts["deliveries:sent"]
        assert counts["coupons_redeemed"] > 0 and counts["referrals"] > 0
        # ... and the analytics pages' numbers per tier, from a year of monthly tier history
        joined = "\n".join(text)
        for page in (
            "/admin/analytics/retention/?breakdown=attribute:channel",
            "/admin/analytics/retention/?breakdown=attribute:city_tier",
            "/admin/analytics/funnel/?preset=five_step&breakdown=layer:rfm",
            "/admin/analytics/flows/?dimension=rfm&grain=month",
            "/admin/analytics/flows/?dimension=value_pyramid&grain=month",
            "/admin/analytics/flows/?dimension=seller_pyramid&grain=month",
        ):
            assert page in joined, joined
        # ... and the AARRR funnel reaches its Referral step: customers who went through
        # acquisition -> activation -> retention -> revenue then invited a friend
        aarrr = next(line for line in first.analytics if line.startswith("  AARRR"))
        referred = re.search(r"Revenue ([\d,]+) -> Referral ([\d,]+)", aarrr)
        assert referred and 0 < int(referred.group(2).replace(",", "")) < int(referred.group(1).replace(",", "")), aarrr
        flows_line = next(line for line in first.analytics if "layer flows of RFM tiers" in line)
        assert "largest: none" not in flows_line, flows_line
        assert any("important_value" in line and "done" in line for line in first.analytics), first.analytics
        # ... D1/D7/D30 with numbers for every acquisition channel and every city tier
        per_group = re.compile(r"^      (\S+(?: \d)?) \([\d,]+ customers\): D1 [\d.]+% · D7 [\d.]+% · D30 [\d.]+%$")
        groups = {m.group(1) for line in first.analytics if (m := per_group.match(line))}
        assert {"organic", "paid_search", "social", "email", "partner", "referral"} <= groups, first.analytics
        assert {"tier 1", "tier 2", "tier 3", "tier 4"} <= groups, first.analytics
        # ... where the planted channel mix shows: paid search and social sign-ups come back
        # less than email and partner ones (their dormant share is about 40% against 13%)
        by_channel = _retention_by_channel()
        assert by_channel["paid"] < by_channel["owned"] - 0.02, by_channel
        # ... a two-sided business: everyone a buyer, some sellers, each side its own pyramid
        roles = next(line for line in first.analytics if line.startswith("  roles ("))
        sellers = int(re.search(r"seller ([\d,]+)", roles).group(1).replace(",", ""))  # type: ignore[union-attr]
        assert f"buyer {counts['customers']:,}" in roles and 0.05 * SCALE < sellers < 0.12 * SCALE, roles
        pyramids = [line for line in first.analytics if line.startswith("  value pyramid (")]
        assert len(pyramids) == 2 and all("Top 1%" in line for line in pyramids), pyramids
        assert "the buyers only" in pyramids[0] and "the sellers only" in pyramids[1], pyramids

        # When: the demo runs again
        second, _ = _run(tmp_path)

    # Then: nothing new, and every step found its work done
    assert second.counts == first.counts
    notes = {t.name.split(":")[0]: t.note for t in second.timings}
    assert "reused" in notes["data"]
    assert notes["import"] == "already imported"
    assert "running already" in notes["launch triggered campaigns (new-user, referral)"]
    assert notes["wave"] == "ingested before"
    assert sum(s.created for s in second.responses) == 0
    assert [f.significant_cells for f in second.findings] == [f.significant_cells for f in first.findings]


def _table_counts(db: Path) -> dict[str, int]:
    tables = [
        "segments_customer",
        "segments_event",
        "campaigns_campaign",
        "campaigns_delivery",
        "experiments_experiment",
        "experiments_assignment",
        "campaigns_offer",
        "campaigns_mailboxmessage",
    ]
    with sqlite3.connect(db) as connection:
        return {t: connection.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


def _demo_env(var: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "CACHE_", "EMAIL_", "CAMPAIGNS_", "PYTEST"))
    }
    env.update(GROWTH_VAR_DIR=str(var), DEMO_SERVE="0", DEMO_CUSTOMERS="300", DEMO_SEED="7")
    return env


def _demo_sh(var: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "demo.sh")],
        cwd=ROOT,
        env=_demo_env(var),
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )


def test_demo_script__tiny_business__a_real_worker_delivers_and_a_rerun_creates_nothing(tmp_path: Path) -> None:
    # Given: an empty var directory; When: `make demo` without serving
    var = tmp_path / "var"
    first = _demo_sh(var)

    # Then: it set everything up, and the Celery worker sent messages into the mailbox
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "Demo summary" in out and "through the Celery worker" in out
    sent = re.search(r"deliver: through the Celery worker\n\s+[\d.]+ s\s+([\d,]+) sent", out)
    assert sent and int(sent.group(1).replace(",", "")) > 0, out
    assert "NOT SETTLED" not in out
    # ... and the AARRR funnel's Referral step is reached (inviters after their orders)
    referred = re.search(r"AARRR, .*-> Referral ([\d,]+)", out)
    assert referred and int(referred.group(1).replace(",", "")) > 0, out
    worker_log = (var / "worker.log").read_text()
    assert "campaigns.deliveries_send" in worker_log and "succeeded" in worker_log
    before = _table_counts(var / "db.sqlite3")
    assert before["campaigns_mailboxmessage"] > 0 and before["campaigns_campaign"] == 4
    # and the worker recorded its heartbeat (for /readyz and the admin) in the demo's cache
    beat = FileBasedCache(str(var / "cache"), {}).get(HEARTBEAT_KEY)
    assert beat and beat["hostname"].startswith("demo@") and time.time() - beat["at"] < 300

    # When: again
    second = _demo_sh(var)

    # Then: nothing was created the second time
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "already imported" in second.stdout and "ingested before" in second.stdout
    assert _table_counts(var / "db.sqlite3") == before

    # and each run printed an API key with every scope: the second run's works, the first's
    # was revoked (only hashes are stored, so a run cannot show the previous key again)
    keys = [re.search(r"API key \(every scope.*\): (gk_(\w+?)_\S+)", run.stdout) for run in (first, second)]
    assert all(keys), second.stdout[-2000:]
    assert (var / "demo-api-key.txt").read_text().strip() == keys[1].group(1)
    assert (var / "demo-api-key.txt").stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(var / "db.sqlite3") as connection:
        rows = dict(
            connection.execute(
                "SELECT prefix, revoked_at IS NULL FROM access_apikey WHERE name = 'demo (make demo)'"
            ).fetchall()
        )
        scopes = json.loads(
            connection.execute("SELECT scopes FROM access_apikey WHERE prefix = ?", (keys[1].group(2),)).fetchone()[0]
        )
    assert rows == {keys[0].group(2): 0, keys[1].group(2): 1}
    assert sorted(scopes) == sorted(Scope.values)


def test_demo_script__worker_killed_mid_delivery__restarted_and_every_message_sent_once(tmp_path: Path) -> None:
    # Given: `make demo` (not serving) on the embedded default, its worker delivering
    var = tmp_path / "var"
    demo = subprocess.Popen(
        [str(ROOT / "scripts" / "demo.sh")],
        cwd=ROOT,
        env=_demo_env(var),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        worker_log = var / "worker.log"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and demo.poll() is None:
            if worker_log.exists() and "Task campaigns.deliveries_send" in worker_log.read_text():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the worker never started sending")
        killed = int((var / "worker.pid").read_text())

        # When: the worker is killed with SIGKILL in the middle of delivering
        os.kill(killed, signal.SIGKILL)
        with sqlite3.connect(var / "db.sqlite3", timeout=30) as connection:
            sent_at_kill = connection.execute("SELECT COUNT(*) FROM campaigns_mailboxmessage").fetchone()[0]
        out, err = demo.communicate(timeout=420)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    # Then: the demo's supervisor started it again, and delivery completed
    assert demo.returncode == 0, out[-4000:] + err[-4000:]
    log = worker_log.read_text()
    assert f"the Celery worker (pid {killed}) exited with status 137; starting it again" in log
    assert int((var / "worker.pid").read_text()) != killed
    after_restart = log.split(f"(pid {killed}) exited", 1)[1]
    assert "succeeded" in after_restart, "the new worker ran nothing"
    assert "NOT SETTLED" not in out, out[-4000:]
    sent = re.search(r"deliver: through the Celery worker\n\s+[\d.]+ s\s+([\d,]+) sent", out)
    assert sent and int(sent.group(1).replace(",", "")) > 0, out[-4000:]
    # and nothing was sent twice: one mailbox message per sent delivery
    with sqlite3.connect(var / "db.sqlite3") as connection:
        sent_rows = connection.execute("SELECT COUNT(*) FROM campaigns_delivery WHERE status = 'sent'").fetchone()[0]
        mailbox = connection.execute("SELECT COUNT(*) FROM campaigns_mailboxmessage").fetchone()[0]
    assert mailbox == sent_rows == int(sent.group(1).replace(",", ""))
    assert sent_at_kill < mailbox, "everything was sent before the kill: not mid-delivery"
    assert not list((var / "broker" / "corrupt").iterdir())
