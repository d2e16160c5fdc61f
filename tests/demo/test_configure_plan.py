"""The demo's experiments record their analysis plan with every metric their campaign will
watch, so the reports carry no "metrics changed after the plan" caveat."""

from __future__ import annotations

import pytest

from campaigns.services.assignments import guardrails_ensure
from demo import configure
from demo.plan import CAMPAIGNS
from experiments.reports.assemble import report_build

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("plan", CAMPAIGNS, ids=[c.key for c in CAMPAIGNS])
def test_experiment_ensure__campaign_launch_adds_guardrails__no_metrics_changed_caveat(plan) -> None:  # type: ignore[no-untyped-def]
    # Given the demo's experiment, started by the demo before its campaign launches
    experiment = configure.experiment_ensure(plan=plan.experiment, holdout=None)
    assert experiment.status == "running"

    # When the launch adds the campaign's default guardrails (campaigns.services.lifecycle)
    added = guardrails_ensure(experiment=experiment)

    # Then there was nothing to add, and the report's metrics are the recorded plan's
    assert added == 0
    codes = [c.code for c in report_build(experiment_key=experiment.key).caveats]
    assert "metrics_differ_from_plan" not in codes
