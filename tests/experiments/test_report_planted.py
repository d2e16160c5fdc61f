"""Planted effects, end to end through the database: a true lift in one layer only is
found there (adjusted p < 0.05) and nowhere else; simulated data written with set-based
SQL, seeded, then the full report (aggregation + statistics) is read."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from experiments.reports.assemble import report_build
from tests.experiments.report_builders import PHASE_START, Group, dimension_create, experiment_create, populate

pytestmark = pytest.mark.django_db

SEED = 20240501
BASE_RATES = {"new": 0.08, "active": 0.10, "vip": 0.12, "lapsed": 0.06}
PLANTED = {"vip": 1.5}  # +50% relative lift for the treatment in "vip" only
CHANNELS = ("email", "sms")
PER_ARM = 2500


def _simulate(rng: np.random.Generator, planted: dict[str, float]) -> list[Group]:
    """Customers of each (tier, variant) cell split at random between channels;
    conversions drawn per (tier, channel, variant) cell as Binomial(n, p), which is the
    sum of the customers' independent Bernoulli(p) draws."""
    groups = []
    for tier, base in BASE_RATES.items():
        for variant in ("control", "treatment"):
            rate = base * (planted.get(tier, 1.0) if variant == "treatment" else 1.0)
            email = int(rng.binomial(PER_ARM, 0.5))
            for channel, n in zip(CHANNELS, (email, PER_ARM - email), strict=True):
                converted = int(rng.binomial(n, rate))
                groups.append(Group(variant, n, {"order": converted}, {"tier": tier, "channel": channel}))
    return groups


def test_report__true_lift_in_one_layer__found_there_and_nowhere_else() -> None:
    # Given 20,000 customers, 50/50, a true +50% lift in "vip" and none in the other tiers
    dimension_create("tier", list(BASE_RATES))
    dimension_create("channel", list(CHANNELS))
    experiment = experiment_create(key="planted")
    populate(experiment, _simulate(np.random.default_rng(SEED), PLANTED))

    # When the report is built from the database
    report = report_build(experiment_key="planted", now=PHASE_START + dt.timedelta(days=14))

    # Then the tier family finds the lift in "vip" only, with Holm across 4 layers
    assert report.primary is not None
    tier = next(d for d in report.primary.dimensions if d.key == "tier")
    verdicts = {row.layer: row.lifts[0] for row in tier.layers}
    assert set(verdicts) == set(BASE_RATES)
    assert verdicts["vip"].adjusted_p_value < 0.05
    assert verdicts["vip"].verdict.label == "significant win"
    assert verdicts["vip"].relative_lift_ci.low > 0
    assert verdicts["vip"].relative_lift_ci.low < 0.5 < verdicts["vip"].relative_lift_ci.high  # covers the truth
    for layer in ("new", "active", "lapsed"):
        assert verdicts[layer].adjusted_p_value >= 0.05, layer
        assert verdicts[layer].verdict.label == "inconclusive", layer
    assert tier.family.size == 4
    # The lift differs between tiers, and the heterogeneity test says so.
    assert tier.heterogeneity.differs is True
    assert report.srm.flagged is False
    # Channels are unrelated to the effect: each carries half of the vip lift, and the
    # test of "does the lift differ between channels" finds nothing.
    channel = next(d for d in report.primary.dimensions if d.key == "channel")
    assert channel.heterogeneity.differs is False


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_report__no_lift_anywhere__no_layer_called_significant(seed: int) -> None:
    # A/A on the same design: Holm keeps the chance of any false call in the family
    # at or below 5%, so these seeds (chosen before looking, not cherry-picked) find none.
    dimension_create("tier", list(BASE_RATES))
    dimension_create("channel", list(CHANNELS))
    experiment = experiment_create(key="aa-test")
    populate(experiment, _simulate(np.random.default_rng(seed), {}))

    report = report_build(experiment_key="aa-test", now=PHASE_START + dt.timedelta(days=14))

    assert report.primary is not None
    for dimension in report.primary.dimensions:
        for row in dimension.layers:
            assert row.lifts[0].verdict.label in ("inconclusive", "not enough data"), (dimension.key, row.layer)
