"""The tier playbook: cells read off the lift reports (winner only where the Holm-adjusted
verdict is a significant win, a loss as a warning, no evidence, not enough data), the
incremental conversions per 1,000 customers, offers per variant and layer, one report per
experiment, the CSV, and who may see the page."""

from __future__ import annotations

import csv
import io
import math

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from campaigns import playbook as playbook_module
from campaigns import views_playbook
from campaigns.models import Campaign, Treatment
from campaigns.playbook import (
    CSV_COLUMNS,
    Cell,
    Playbook,
    playbook_build,
    playbook_campaigns_queryset,
    playbook_csv,
    playbook_unmeasured_queryset,
)
from experiments import stats
from experiments.models import Experiment
from segments.models import Layer
from tests.campaigns.builders import recipients_from_assignments
from tests.experiments.report_builders import Group, dimension_create, experiment_create, populate
from tests.factories import CampaignFactory, OfferFactory, UserFactory

pytestmark = pytest.mark.django_db

Z975 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)
EXPIRY_LAYERS = ["expired_recently", "expiring_soon", "valid", "none"]


def renewal_experiment(key: str = "renewal-split") -> Experiment:
    """Planted per layer (primary metric ``order``), control vs discount:
    expiring_soon 10% -> 18% (win), valid 10% -> 10.4% (no evidence),
    expired_recently 20% -> 13% (loss), none 40 customers per arm (not enough data)."""
    dimension_create("expiry", EXPIRY_LAYERS)
    experiment = experiment_create(
        key=key,
        variants=(("control", 0.5), ("discount", 0.5)),
        plan={"inference_mode": "fixed", "planned_sample_size": 1, "confirmatory_dimensions": ["expiry"]},
    )
    populate(
        experiment,
        [
            Group("control", 1000, {"order": 100}, {"expiry": "expiring_soon"}),
            Group("discount", 1000, {"order": 180}, {"expiry": "expiring_soon"}),
            Group("control", 1000, {"order": 100}, {"expiry": "valid"}),
            Group("discount", 1000, {"order": 104}, {"expiry": "valid"}),
            Group("control", 1000, {"order": 200}, {"expiry": "expired_recently"}),
            Group("discount", 1000, {"order": 130}, {"expiry": "expired_recently"}),
            Group("control", 40, {"order": 4}, {"expiry": "none"}),
            Group("discount", 40, {"order": 6}, {"expiry": "none"}),
        ],
    )
    return experiment


def running_campaign(experiment: Experiment, key: str = "renewal", **fields: object) -> Campaign:
    defaults: dict[str, object] = {
        "name": key.title(),
        "kind": Campaign.Kind.RENEWAL,
        "status": Campaign.Status.RUNNING,
        "started_at": timezone.now(),
    }
    row = CampaignFactory(key=key, experiment=experiment, **{**defaults, **fields})
    if row.experiment_id is not None:
        recipients_from_assignments(row)
    return row


def cell(playbook: Playbook, dimension: str, layer: str | None, campaign: str) -> Cell:
    matrix = next(m for m in playbook.dimensions if m.dimension == dimension)
    row = next(r for r in matrix.rows if r.layer == layer)
    index = [c.campaign_key for c in playbook.columns].index(campaign)
    return row.cells[index]


def build() -> Playbook:
    return playbook_build(campaigns=list(playbook_campaigns_queryset()))


# --- Cells ---------------------------------------------------------------------------------


def test_playbook_build__planted_layers__win_loss_no_evidence_and_not_enough_data() -> None:
    running_campaign(renewal_experiment())
    playbook = build()

    assert [c.campaign_key for c in playbook.columns] == ["renewal"]
    assert [m.dimension for m in playbook.dimensions] == ["expiry"]
    outcomes = {r.layer: r.cells[0].outcome for r in playbook.dimensions[0].rows}
    assert outcomes == {
        "expired_recently": "loss",
        "expiring_soon": "win",
        "valid": "no_evidence",
        "none": "not_enough_data",
    }
    win = cell(playbook, "expiry", "expiring_soon", "renewal")
    assert win.best is not None and win.best.variant == "discount" and win.customers == 2000
    loss = cell(playbook, "expiry", "expired_recently", "renewal")
    # A loss is a warning, never a winner: the cell names the losing variant as such.
    assert loss.best is not None and loss.best.verdict == "significant loss" and loss.best.absolute_lift < 0
    assert cell(playbook, "expiry", "valid", "renewal").best is None
    # The overall row (all customers) is read the same way.
    assert playbook.overall.rows[0].cells[0].customers == 6080


def test_playbook_build__win__incremental_per_1000_is_absolute_lift_times_1000_with_its_interval() -> None:
    running_campaign(renewal_experiment())
    win = cell(build(), "expiry", "expiring_soon", "renewal").best
    assert win is not None
    # Rates 0.10 and 0.18 on 1,000 each: the report's interval (the score interval of the
    # pooled decision test, tested in test_stats) x 1,000; it is a little wider than Wald's.
    se = math.sqrt(0.10 * 0.90 / 1000 + 0.18 * 0.82 / 1000)
    ci = stats.compare(stats.Arm(1000, 100), stats.Arm(1000, 180), method="pooled").absolute_lift_ci
    assert win.per_1000 == pytest.approx(80.0, abs=1e-9)
    assert win.per_1000_ci is not None
    assert (win.per_1000_ci.low, win.per_1000_ci.high) == (
        pytest.approx(ci.low * 1000, abs=1e-9),
        pytest.approx(ci.high * 1000, abs=1e-9),
    )
    assert win.per_1000_ci.low == pytest.approx((0.08 - Z975 * se) * 1000, abs=1.0)
    assert win.relative_lift == pytest.approx(0.8)
    assert win.adjusted_p_value is not None and win.adjusted_p_value < 0.05


def test_playbook_build__holm_adjusted_not_significant__no_winner() -> None:
    # One layer at p ~ 0.03 unadjusted, alone in a family of 4 layers: Holm makes it
    # inconclusive, so the playbook shows no evidence although the interval leaves out 0.
    dimension_create("expiry", EXPIRY_LAYERS)
    experiment = experiment_create(key="borderline", variants=(("control", 0.5), ("discount", 0.5)))
    groups = [
        Group("control", 1000, {"order": 100}, {"expiry": "expiring_soon"}),
        Group("discount", 1000, {"order": 130}, {"expiry": "expiring_soon"}),
    ]
    for layer in ("valid", "expired_recently", "none"):
        groups += [
            Group("control", 1000, {"order": 100}, {"expiry": layer}),
            Group("discount", 1000, {"order": 100}, {"expiry": layer}),
        ]
    populate(experiment, groups)
    running_campaign(experiment)
    borderline = cell(build(), "expiry", "expiring_soon", "renewal")
    assert borderline.outcome == "no_evidence"
    lift = borderline.lifts[0]
    assert lift.absolute_lift_ci is not None and lift.absolute_lift_ci.low > 0  # unadjusted interval excludes 0
    assert lift.verdict == "inconclusive"


def test_playbook_build__two_winning_variants__largest_lift_shown_and_a_loss_listed_beside_it() -> None:
    dimension_create("expiry", EXPIRY_LAYERS)
    experiment = experiment_create(
        key="three-way",
        variants=(("control", 0.25), ("small", 0.25), ("big", 0.25), ("bad", 0.25)),
        plan={"inference_mode": "fixed", "planned_sample_size": 1, "confirmatory_dimensions": ["expiry"]},
    )
    populate(
        experiment,
        [
            Group("control", 2000, {"order": 200}, {"expiry": "valid"}),
            Group("small", 2000, {"order": 300}, {"expiry": "valid"}),
            Group("big", 2000, {"order": 400}, {"expiry": "valid"}),
            Group("bad", 2000, {"order": 100}, {"expiry": "valid"}),
        ],
    )
    running_campaign(experiment)
    result = cell(build(), "expiry", "valid", "renewal")
    assert result.outcome == "win"
    assert result.best is not None and result.best.variant == "big"
    assert result.best.per_1000 == pytest.approx(100.0)
    assert [v.variant for v in result.losses] == ["bad"]
    assert {v.variant: v.verdict for v in result.lifts} == {
        "small": "significant win",
        "big": "significant win",
        "bad": "significant loss",
    }


def test_playbook_build__layers__configured_order_unreached_layers_and_other_campaigns_no_customers() -> None:
    running_campaign(renewal_experiment())
    # A second campaign whose experiment only reached "valid" customers.
    other = experiment_create(key="valid-only", variants=(("control", 0.5), ("gift", 0.5)))
    populate(
        other,
        [
            Group("control", 500, {"order": 50}, {"expiry": "valid"}),
            Group("gift", 500, {"order": 55}, {"expiry": "valid"}),
        ],
    )
    running_campaign(other, key="gift", kind=Campaign.Kind.WINBACK)
    Layer.objects.create(dimension=Layer.objects.get(key="valid").dimension, key="lapsed", name="Lapsed", position=99)
    playbook = build()

    rows = playbook.dimensions[0].rows
    configured = list(
        Layer.objects.filter(dimension__key="expiry").order_by("position", "key").values_list("key", flat=True)
    )
    assert [r.layer for r in rows] == configured
    lapsed = next(r for r in rows if r.layer == "lapsed")
    assert {c.outcome for c in lapsed.cells} == {"no_customers"}
    assert cell(playbook, "expiry", "expiring_soon", "gift").outcome == "no_customers"
    assert cell(playbook, "expiry", "valid", "gift").outcome == "no_evidence"


def test_playbook_build__offers__variant_and_split_layer_specific_treatments_named() -> None:
    experiment = renewal_experiment()
    campaign = running_campaign(experiment, split_dimension=Layer.objects.get(key="valid").dimension)
    soon = Layer.objects.get(dimension__key="expiry", key="expiring_soon")
    Treatment.objects.create(campaign=campaign, variant_key="discount", offer=OfferFactory(name="10% off renewal"))
    Treatment.objects.create(
        campaign=campaign, variant_key="discount", layer=soon, offer=OfferFactory(name="20% off renewal")
    )
    playbook = build()
    assert cell(playbook, "expiry", "expiring_soon", "renewal").best.offer == "20% off renewal"  # type: ignore[union-attr]
    assert cell(playbook, "expiry", "expired_recently", "renewal").best.offer == "10% off renewal"  # type: ignore[union-attr]
    # Overall, the variant gave different offers by expiry window: both are named.
    overall = playbook.overall.rows[0].cells[0]
    assert overall.lifts[0].offer == "10% off renewal / 20% off renewal"


def test_playbook_build__two_campaigns_share_an_experiment__one_report_built(monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = renewal_experiment()
    running_campaign(experiment, key="first")
    running_campaign(experiment, key="second", status=Campaign.Status.FINISHED)
    calls: list[str] = []
    real = playbook_module.report_build

    def counting(**kwargs: object):  # type: ignore[no-untyped-def]
        calls.append(str(kwargs["experiment_key"]))
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(playbook_module, "report_build", counting)
    playbook = build()
    assert calls == ["renewal-split"]
    assert playbook.reports_built == 1
    assert [c.campaign_key for c in playbook.columns] == ["first", "second"]  # running before finished
    assert cell(playbook, "expiry", "expiring_soon", "second").outcome == "win"


def test_playbook_campaigns_queryset__only_live_or_finished_campaigns_with_an_experiment() -> None:
    experiment = renewal_experiment()
    for status in Campaign.Status.values:
        running_campaign(experiment, key=f"with-{status}", status=status)
        CampaignFactory(key=f"without-{status}", status=status)
    assert sorted(c.key for c in playbook_campaigns_queryset()) == ["with-finished", "with-paused", "with-running"]
    assert sorted(c.key for c in playbook_unmeasured_queryset()) == [
        "without-finished",
        "without-paused",
        "without-running",
    ]


def test_playbook_build__srm_and_guardrail_harm__warned_on_the_column() -> None:
    dimension_create("expiry", EXPIRY_LAYERS)
    experiment = experiment_create(
        key="harmful",
        variants=(("control", 0.5), ("spam", 0.5)),
        metrics=(("order", "primary"), ("unsubscribe", "guardrail")),
    )
    populate(
        experiment,
        [
            Group("control", 4600, {"order": 460, "unsubscribe": 20}, {"expiry": "valid"}),
            Group("spam", 5400, {"order": 540, "unsubscribe": 200}, {"expiry": "valid"}),
        ],
    )
    running_campaign(experiment)
    (column,) = build().columns
    assert column.srm_flagged
    assert any("Sample ratio mismatch" in w for w in column.warnings)
    assert any(w.startswith("Guardrail unsubscribe got significantly worse") for w in column.warnings)
    # Every verdict of an SRM-flagged experiment carries the caveat into the cell.
    assert cell(build(), "expiry", "valid", "renewal").caveats


def test_playbook_build__experiment_without_primary_metric__no_report_cells() -> None:
    dimension_create("expiry", EXPIRY_LAYERS)
    experiment = experiment_create(key="no-primary", metrics=(("order", "secondary"),))
    populate(
        experiment,
        [
            Group("control", 200, {"order": 20}, {"expiry": "valid"}),
            Group("treatment", 200, {"order": 20}, {"expiry": "valid"}),
        ],
    )
    running_campaign(experiment)
    playbook = build()
    assert playbook.overall.rows[0].cells[0].outcome == "no_report"
    assert playbook.dimensions == ()
    assert "no primary metric" in playbook.columns[0].warnings[0]


# --- CSV -----------------------------------------------------------------------------------


def test_playbook_csv__one_line_per_cell__numbers_and_formula_escaping() -> None:
    running_campaign(renewal_experiment(), name='=HYPERLINK("http://evil")')
    body = playbook_csv(build(), report_url=lambda key: f"http://testserver/admin/reports/experiments/{key}/")
    lines = list(csv.DictReader(io.StringIO(body)))
    assert tuple(lines[0]) == CSV_COLUMNS
    assert len(lines) == 1 + 4  # overall + four expiry layers, one campaign
    by_layer = {line["layer"]: line for line in lines}
    assert by_layer["expiring_soon"]["outcome"] == "win"
    assert float(by_layer["expiring_soon"]["incremental_conversions_per_1000"]) == pytest.approx(80.0)
    assert float(by_layer["expiring_soon"]["incremental_conversions_per_1000_ci_low"]) > 0
    assert by_layer["expired_recently"]["outcome"] == "loss"
    assert float(by_layer["expired_recently"]["incremental_conversions_per_1000"]) == pytest.approx(-70.0)
    assert by_layer["valid"]["outcome"] == "no_evidence" and by_layer["valid"]["variant"] == ""
    assert by_layer["none"]["outcome"] == "not_enough_data"
    assert {line["campaign_name"] for line in lines} == {'\'=HYPERLINK("http://evil")'}
    assert by_layer["valid"]["report_url"] == "http://testserver/admin/reports/experiments/renewal-split/"


# --- Pages ---------------------------------------------------------------------------------


def _pages() -> list[str]:
    return [reverse("playbook:index"), reverse("playbook:csv")]


@pytest.mark.parametrize("role", ["marketer", "growth"])
def test_playbook_pages__marketer_and_growth__allowed(client: Client, role: str) -> None:
    running_campaign(renewal_experiment())
    client.force_login(UserFactory(groups=[role]))
    for url in _pages():
        assert client.get(url).status_code == 200, url


def test_playbook_pages__anonymous__sent_to_the_admin_login(client: Client) -> None:
    for url in _pages():
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login")), url


@pytest.mark.parametrize("codenames", [(), ("view_report",), ("view_campaign",)])
def test_playbook_pages__staff_without_both_permissions__forbidden(client: Client, codenames: tuple[str, ...]) -> None:
    from django.contrib.auth.models import Permission

    user = UserFactory()
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    for url in _pages():
        assert client.get(url).status_code == 403, url


def test_playbook_page__shows_winner_lift_per_1000_loss_warning_and_report_link(client: Client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    experiment = renewal_experiment()
    campaign = running_campaign(experiment)
    Treatment.objects.create(campaign=campaign, variant_key="discount", offer=OfferFactory(name="Renewal 20% off"))
    Layer.objects.create(
        dimension=campaign.split_dimension or Layer.objects.get(key="valid").dimension,
        key="lapsed",
        name="Lapsed",
        position=9,
    )
    client.force_login(marketer_user)
    html = client.get(reverse("playbook:index")).content.decode()
    assert "Tier playbook" in html and 'id="site-name"' in html  # the admin's chrome
    assert "Winner: Discount" in html and "Renewal 20% off" in html
    assert "+80.0 per 1,000" in html and "+80.0%" in html
    assert "\u221270.0 per 1,000" in html and "Do not give this offer to this layer." in html
    assert 'data-outcome="no_evidence"' in html and 'data-outcome="not_enough_data"' in html
    assert 'data-layer="lapsed"' not in html and "No campaign on this page reached: Lapsed." in html
    assert reverse("reports:experiment", args=["renewal-split"]) in html
    assert "(treatment conversion rate − control conversion rate) × 1,000" in html


def test_playbook_page__no_campaigns__says_so(client: Client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    CampaignFactory(key="blanket", name="Blanket coupon", status=Campaign.Status.RUNNING)
    client.force_login(marketer_user)
    html = client.get(reverse("playbook:index")).content.decode()
    assert 'id="playbook-empty"' in html
    assert "Not measured (no experiment, so no control group)" in html and "Blanket coupon" in html


def test_playbook_csv_view__attachment_with_the_page(
    client: Client, growth_user, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(views_playbook, "PAGE_SIZE", 1)
    experiment = renewal_experiment()
    running_campaign(experiment, key="a")
    running_campaign(experiment, key="b", status=Campaign.Status.PAUSED)
    client.force_login(growth_user)
    page = client.get(reverse("playbook:index")).content.decode()
    assert "Campaigns 1–1 of 2" in page and f"{reverse('playbook:csv')}?page=1" in page
    response = client.get(reverse("playbook:csv") + "?page=2")
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="tier-playbook-')
    assert response["Content-Disposition"].endswith('-page2.csv"')
    assert {line["campaign"] for line in csv.DictReader(io.StringIO(response.content.decode()))} == {"b"}


# --- Cost --------------------------------------------------------------------------------


def _add_experiments(keys: list[str]) -> None:
    dimension_create("expiry", EXPIRY_LAYERS)
    dimension_create("tier", ["new", "vip"])
    for key in keys:
        experiment = experiment_create(key=key, variants=(("control", 0.5), ("treatment", 0.5)))
        populate(
            experiment,
            [
                Group(variant, 150, {"order": 15 + 10 * (variant == "treatment")}, {"expiry": layer, "tier": tier})
                for variant in ("control", "treatment")
                for layer in EXPIRY_LAYERS
                for tier in ("new", "vip")
            ],
        )
        running_campaign(experiment, key=f"campaign-{key}")


def _queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("playbook:index")).status_code == 200
    return len(queries)


def test_playbook_page__queries__a_fixed_number_per_experiment_not_per_cell(client: Client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)
    _add_experiments(["exp-0"])
    one = _queries(client)
    _add_experiments(["exp-1"])
    two = _queries(client)
    # Three more experiments, each with 2 dimensions x (4 + 2) layers x 2 variants: the
    # page costs the report's own queries once per experiment, nothing per cell or layer.
    _add_experiments(["exp-2", "exp-3", "exp-4"])
    five = _queries(client)
    per_experiment = two - one
    assert per_experiment <= 15, (one, two, five)
    assert five - two == 3 * per_experiment, (one, two, five)


def test_playbook_build__campaign_reached_nobody__says_so_not_the_experiments_winner() -> None:
    # Given an experiment with a planted win, and a finished campaign on it that decided nobody
    experiment = renewal_experiment()
    running_campaign(experiment)
    row = CampaignFactory(
        key="empty",
        experiment=experiment,
        kind=Campaign.Kind.RENEWAL,
        status=Campaign.Status.FINISHED,
        started_at=timezone.now(),
    )
    # When the playbook is built
    playbook = build()
    # Then every cell of its column says it reached nobody, and no winner is shown
    index = [c.campaign_key for c in playbook.columns].index(row.key)
    column = playbook.columns[index]
    assert column.reached == 0 and column.customers == 0
    assert "reached nobody" in column.warnings[0]
    assert playbook.overall.rows[0].cells[index].outcome == "no_reach"
    assert cell(playbook, "expiry", "expiring_soon", "empty").outcome == "no_reach"
    assert all(r.cells[index].best is None for m in playbook.dimensions for r in m.rows)


def test_playbook_page__campaign_reached_nobody__reached_nobody_not_winner(client: Client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    experiment = renewal_experiment()
    CampaignFactory(key="empty", experiment=experiment, status=Campaign.Status.FINISHED, started_at=timezone.now())
    client.force_login(marketer_user)
    html = client.get(reverse("playbook:index")).content.decode()
    assert "Reached nobody" in html and "Winner" not in html.split("<h2>All customers</h2>")[1].split("</table>")[0]


def test_playbook_build__dimension_not_declared_confirmatory__exploratory_never_a_winner() -> None:
    # Given the same planted layers, but a plan that declares no confirmatory dimension
    dimension_create("expiry", EXPIRY_LAYERS)
    experiment = experiment_create(variants=(("control", 0.5), ("discount", 0.5)))
    populate(
        experiment,
        [
            Group("control", 1000, {"order": 100}, {"expiry": "expiring_soon"}),
            Group("discount", 1000, {"order": 180}, {"expiry": "expiring_soon"}),
        ],
    )
    running_campaign(experiment)

    playbook = build()

    # Then the significant layer is an exploratory lead, not a winner
    lead = cell(playbook, "expiry", "expiring_soon", "renewal")
    assert (lead.outcome, lead.best) == ("exploratory", None)
    assert "not in the experiment's declared decision family" in lead.explanation
    assert "declared decision family" in playbook.columns[0].decision_rule


# --- Incremental revenue (issue 15) ---------------------------------------------------------


def test_playbook_build__win_with_revenue_metric__incremental_revenue_per_1000_net_of_coupon_cost() -> None:
    # Given a win on conversion in one tier, where the 5 EUR coupon's buyers spend less
    import datetime as dt
    from decimal import Decimal

    from experiments.models import Assignment, Metric
    from segments.models import Event, EventType
    from tests.experiments.report_builders import PHASE_START

    dimension_create("expiry", EXPIRY_LAYERS)
    experiment = experiment_create(
        key="value-split",
        variants=(("control", 0.5), ("discount", 0.5)),
        metrics=(("order", "primary"), ("coupon_redeemed", "secondary")),
        plan={"inference_mode": "fixed", "planned_sample_size": 1, "confirmatory_dimensions": ["expiry"]},
    )
    populate(
        experiment,
        [
            Group("control", 1000, {"order": 100}, {"expiry": "expiring_soon"}),
            Group("discount", 1000, {"order": 180, "coupon_redeemed": 150}, {"expiry": "expiring_soon"}),
        ],
    )
    # (after populate: its conversions are written by event code)
    Metric.objects.create(
        experiment=experiment,
        event_type=EventType.objects.get(code="order"),
        role=Metric.Role.SECONDARY,
        kind=Metric.Kind.SUM,
        cuped_lookback_days=0,
    )
    order = EventType.objects.get(code="order")
    at = PHASE_START + dt.timedelta(days=1, hours=2)
    buyers = {"control": 100, "discount": 180}
    amount = {"control": Decimal("60.00"), "discount": Decimal("30.00")}
    events = []
    for variant in ("control", "discount"):
        rows = Assignment.objects.filter(variant__key=variant, phase__experiment=experiment).order_by("id")
        for a in rows[: buyers[variant]]:
            events.append(
                Event(
                    event_id=f"o-{a.customer_id}",
                    customer_id=a.customer_id,
                    event_type=order,
                    occurred_at=at,
                    amount=amount[variant],
                    currency="EUR",
                )
            )
    Event.objects.bulk_create(events)
    campaign = running_campaign(experiment, key="value")
    Treatment.objects.create(
        campaign=campaign,
        variant_key="discount",
        offer=OfferFactory(name="5 EUR off", benefit_kind="amount_off", value=Decimal("5"), currency="EUR"),
    )

    the_cell = cell(build(), "expiry", "expiring_soon", "value")
    win = the_cell.best
    assert the_cell.outcome == "win", the_cell.explanation

    # Then: 80 more buyers per 1,000, but revenue per customer 6.00 -> 5.40: -600 EUR per
    # 1,000; the coupon costs 0.15 x 5 x 1,000 = 750 EUR; net -1,350 EUR per 1,000.
    assert win is not None and win.verdict == "significant win" and win.per_1000 == pytest.approx(80.0)
    assert win.revenue_metric == "order:sum" and win.currency == "EUR"
    assert win.revenue_per_1000 == pytest.approx(-600.0, abs=1e-9)
    assert win.offer_cost_per_1000 == pytest.approx(750.0, abs=1e-9)
    assert win.net_revenue_per_1000 == pytest.approx(-1350.0, abs=1e-9)
    # Its interval is Welch's (revenue per customer, 95%) x 1,000, as scipy computes it
    from scipy import stats as sps

    treated = [30.0] * 180 + [0.0] * 820
    control = [60.0] * 100 + [0.0] * 900
    ref = sps.ttest_ind(treated, control, equal_var=False).confidence_interval(0.95)
    assert win.revenue_per_1000_ci.low == pytest.approx(ref.low * 1000, rel=1e-9)
    assert win.revenue_per_1000_ci.high == pytest.approx(ref.high * 1000, rel=1e-9)
