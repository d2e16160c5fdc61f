"""The admin report pages: who may see them, what they show (SRM banner, forest plot,
tables), exports and the power planner."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import pytest
from django.test import Client
from django.urls import reverse

from experiments.models import Experiment
from experiments.reports.exports import report_json
from tests.experiments.report_builders import Group, dimension_create, experiment_create, populate, without_clock
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment() -> Experiment:
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create(metrics=(("order", "primary"), ("unsubscribe", "guardrail")))
    populate(
        experiment,
        [
            Group("control", 500, {"order": 50, "unsubscribe": 5}, {"tier": "new"}),
            Group("treatment", 500, {"order": 65, "unsubscribe": 6}, {"tier": "new"}),
            Group("control", 300, {"order": 60}, {"tier": "vip"}, day=1, conversion_day=2),
            Group("treatment", 300, {"order": 62}, {"tier": "vip"}, day=1, conversion_day=2),
        ],
    )
    return experiment


def _pages(key: str) -> list[str]:
    return [
        reverse("reports:index"),
        reverse("reports:experiment", args=[key]),
        reverse("reports:experiment-csv", args=[key]),
        reverse("reports:experiment-json", args=[key]),
        reverse("reports:experiment-timeseries", args=[key]),
        reverse("reports:planner") + f"?experiment={key}",
    ]


@pytest.mark.parametrize("role", ["marketer", "growth"])
def test_report_pages__marketer_and_growth__can_view_everything(
    client: Client, experiment: Experiment, role: str
) -> None:
    client.force_login(UserFactory(groups=[role]))
    for url in _pages(experiment.key):
        assert client.get(url).status_code == 200, url


def test_report_pages__anonymous__sent_to_the_admin_login(client: Client, experiment: Experiment) -> None:
    for url in _pages(experiment.key):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login"))


def test_report_pages__staff_without_the_permission__forbidden(client: Client, experiment: Experiment) -> None:
    client.force_login(UserFactory())  # staff, no group
    for url in _pages(experiment.key):
        assert client.get(url).status_code == 403, url


def test_report_page__unknown_experiment__404(client: Client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)
    assert client.get(reverse("reports:experiment", args=["nope"])).status_code == 404
    assert client.get(reverse("reports:experiment-csv", args=["nope"])).status_code == 404


def test_report_page__admin_look_tables_forest_plot_and_family(
    client: Client, experiment: Experiment, marketer_user
) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)

    response = client.get(reverse("reports:experiment", args=[experiment.key]))

    html = response.content.decode()
    assert 'id="site-name"' in html  # the admin's header: the page extends admin/base_site.html
    assert "Primary metric: Ordered" in html
    assert html.count('class="forest-plot"') == 1  # primary metric, one dimension
    forest = re.search(r'<svg class="forest-plot".*?</svg>', html, re.S).group(0)  # type: ignore[union-attr]
    assert forest.count("<circle") == 3  # all customers + 2 layers
    assert "Adjusted together (Holm" in html
    assert "Exploratory: the 2 layers of Tier x 1 treatment variant(s), order (primary metric)." in html
    assert "Does the lift differ between layers?" in html
    assert 'id="srm-banner"' not in html
    assert "vendor/chartjs/chart.umd.min.js" in html
    assert "Intervals are not adjusted, verdicts are." in html
    assert 'id="metric-unsubscribe-guardrail"' in html


def test_report_page__bh_selected__adjustment_applied_and_passed_to_exports(
    client: Client, experiment: Experiment, marketer_user
) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)

    html = client.get(reverse("reports:experiment", args=[experiment.key]) + "?adjustment=bh").content.decode()

    assert '<option value="bh" selected>' in html
    assert "report.csv?adjustment=bh" in html
    assert "Adjusted together (Benjamini-Hochberg" in html


@pytest.mark.parametrize(("control", "treatment", "banner"), [(4600, 5400, True), (5000, 5000, False)])
def test_report_page__split_of_10000_customers__srm_banner_only_when_off(
    client: Client,
    marketer_user,
    control: int,
    treatment: int,
    banner: bool,  # type: ignore[no-untyped-def]
) -> None:
    # Given a 50/50 experiment with 10,000 customers split 46/54 (or 50/50)
    experiment = experiment_create()
    populate(experiment, [Group("control", control, {"order": 500}), Group("treatment", treatment, {"order": 540})])
    client.force_login(marketer_user)

    html = client.get(reverse("reports:experiment", args=[experiment.key])).content.decode()

    assert ('id="srm-banner"' in html) is banner
    if banner:
        assert "Sample ratio mismatch: do not trust these results yet" in html
        assert "control 4600 vs 5000; treatment 5400 vs 5000" in html
        assert "This layer" not in html
        assert html.count("The experiment&#x27;s traffic split does not match its weights") >= 1


def test_exports__csv_and_json_downloads__match_the_report(
    client: Client, experiment: Experiment, marketer_user
) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)

    csv_response = client.get(reverse("reports:experiment-csv", args=[experiment.key]))
    json_response = client.get(reverse("reports:experiment-json", args=[experiment.key]))

    assert csv_response["Content-Type"].startswith("text/csv")
    assert 'filename="offer-test-report-phase1-holm.csv"' in csv_response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_response.content.decode())))
    # 2 metrics x (overall + 2 layers) x 1 treatment
    assert len(rows) == 6
    data = json.loads(json_response.content)
    assert data["experiment"]["key"] == "offer-test"
    assert [m["metric"]["role"] for m in data["metrics"]] == ["primary", "guardrail"]
    assert data["timeseries"] == [] and data["undefined"]["timeseries"]["code"] == "not_requested"


def test_timeseries_endpoint__chart_data_per_variant(client: Client, experiment: Experiment, marketer_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)

    data = client.get(reverse("reports:experiment-timeseries", args=[experiment.key])).json()

    assert data["labels"] == ["2024-05-01", "2024-05-02", "2024-05-03"]
    assert [d["label"] for d in data["datasets"]] == ["Control (control)", "Treatment"]
    control = data["datasets"][0]
    assert control["exposed"] == [500, 800, 800]
    # Day 3: new converted on day 2, vip on day 3: (50 + 60) / 800
    assert control["data"][2] == pytest.approx(110 / 800 * 100)


def test_planner__experiment_layer__customers_and_days_at_the_layers_traffic(
    client: Client, experiment: Experiment, marketer_user
) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)

    response = client.get(
        reverse("reports:planner"), {"experiment": experiment.key, "segment": "tier:vip", "mde": "20", "power": "0.8"}
    )

    html = response.content.decode()
    assert response.status_code == 200
    result = re.search(r'<table class="report-table" id="planner-result">.*?</table>', html, re.S).group(0)  # type: ignore[union-attr]
    # vip control: 60/300 = 20%; +20% -> 24%.
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    n = math.ceil(
        NormalIndPower().solve_power(effect_size=proportion_effectsize(0.24, 0.2), alpha=0.05, power=0.8, ratio=1.0)
    )
    assert "20.00%" in result
    assert f"control: <strong>{n:,}</strong>" in result
    assert f"{2 * n:,}" in result
    assert 'id="planner-layers"' in html  # every layer at this lift


def test_planner__no_experiment__plans_from_the_numbers_given(client: Client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)

    html = client.get(
        reverse("reports:planner"), {"baseline": "5", "mde": "10", "daily_traffic": "1000", "power": "0.8"}
    ).content.decode()

    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    n = math.ceil(NormalIndPower().solve_power(effect_size=proportion_effectsize(0.055, 0.05), alpha=0.05, power=0.8))
    assert f"control: <strong>{n:,}</strong>" in html
    days = re.search(r"Days needed from the start</th><td class=\"num\">\s*([^<\s]+)", html).group(1)  # type: ignore[union-attr]
    assert days == f"{math.ceil(2 * n / 1000):,}"  # at 1,000 a day, 500 to each arm


def test_planner__link_with_only_the_experiment__plans_every_layer_at_its_mde(
    client: Client, experiment: Experiment, marketer_user
) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)

    response = client.get(reverse("reports:planner"), {"experiment": experiment.key})

    assert response.context["form"].errors == {}
    assert [line.label for line in response.context["table"]] == ["All customers", "Tier: New", "Tier: Vip"]
    assert response.context["result"].label == "All customers"


def test_planner__bad_input__errors_name_the_field(client: Client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)

    response = client.get(reverse("reports:planner"), {"mde": "0", "experiment": "missing-one", "power": "0.8"})

    form = response.context["form"]
    assert "mde" in form.errors
    assert "experiment" in form.errors or "mde" in form.errors


def test_json_export__same_document_as_report_json(client: Client, experiment: Experiment, marketer_user) -> None:  # type: ignore[no-untyped-def]
    from experiments.reports.assemble import report_build

    client.force_login(marketer_user)
    exported = client.get(reverse("reports:experiment-json", args=[experiment.key])).json()
    direct = json.loads(report_json(report_build(experiment_key=experiment.key)))

    assert without_clock(exported) == without_clock(direct)
