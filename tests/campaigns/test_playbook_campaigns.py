"""The playbook reads campaigns (issue 16, bullet 7): each column is the campaign's own
analysis, its experiment's current phase and only the customers it decided."""

from __future__ import annotations

import pytest

from campaigns.services.assignments import manager_tag
from experiments import services as experiment_services
from tests.campaigns.test_playbook import build, cell, renewal_experiment, running_campaign

pytestmark = pytest.mark.django_db


def test_playbook_build__new_version_opened_an_empty_phase__reached_nobody_in_it_not_the_old_winner() -> None:
    # Given a campaign whose first phase has a planted win, then a new version (a new phase)
    experiment = renewal_experiment()
    row = running_campaign(experiment)
    assert cell(build(), "expiry", "expiring_soon", "renewal").outcome == "win"
    experiment_services.experiment_new_phase(experiment=experiment, reason="version 2")
    row.version = 2
    row.save(update_fields=["version"])
    # When the playbook is built
    playbook = build()
    # Then the column is the current phase's: nobody yet, said so, and no winner
    column = playbook.columns[0]
    assert (column.reached, column.customers, column.phase_number) == (0, 0, 2)
    assert "current phase 2" in column.warnings[0] and "version 2" in column.warnings[0]
    assert playbook.overall.rows[0].cells[0].outcome == "no_reach"
    assert not any(c.best for m in playbook.dimensions for r in m.rows for c in r.cells)


def test_playbook_build__experiment_owned_by_another_campaign__not_this_campaigns_result() -> None:
    # Given two campaigns on one experiment, which the first one owns
    experiment = renewal_experiment()
    owner = running_campaign(experiment, key="renewal")
    running_campaign(experiment, key="copycat")
    experiment.managed_by = manager_tag(owner.pk)
    experiment.save(update_fields=["managed_by"])
    # When the playbook is built
    playbook = build()
    # Then the owner shows the experiment's result, the other campaign says whose it is
    keys = [c.campaign_key for c in playbook.columns]
    copycat = playbook.columns[keys.index("copycat")]
    assert copycat.reached == 0 and "run by campaign 'renewal'" in copycat.warnings[0]
    assert cell(playbook, "expiry", "expiring_soon", "copycat").outcome == "no_reach"
    assert cell(playbook, "expiry", "expiring_soon", "renewal").outcome == "win"
    assert playbook.columns[keys.index("renewal")].reached == 6080  # 2 x 3 x 1,000 + 2 x 40
