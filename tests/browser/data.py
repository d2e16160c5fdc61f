"""Data the browser journeys start from, written (and committed) in the test process so the
gunicorn process serving the pages reads it.

``campaigns_with_results``: two running campaigns whose experiments have results with
planted effects by layer (counts written set-based by the report tests' builders):

* renewal (expiry windows), control vs ``discount20``: "expiring within the next 3 months"
  10% -> 18% (significant win, +80 per 1,000), "valid for more than 3 months" 10% -> 10.4%
  (no evidence), "expired within the last 3 months" 20% -> 13% (significant loss),
  "no current membership" 40 customers per arm (not enough data);
* win-back (RFM tiers), control vs ``comeback``: "important win-back" 5% -> 11% (win,
  +60 per 1,000), "general win-back" 5% -> 5.4% (no evidence).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from campaigns.models import Campaign, Treatment
from experiments.models import Experiment
from segments.models import Dimension
from tests.campaigns.builders import recipients_from_assignments
from tests.experiments.report_builders import Group, experiment_create, populate
from tests.factories import CampaignFactory, OfferFactory


@dataclass(frozen=True)
class Results:
    renewal: Campaign
    renewal_experiment: Experiment
    winback: Campaign
    winback_experiment: Experiment


def campaigns_with_results() -> Results:
    renewal_experiment = experiment_create(
        key="renewal-by-window",
        variants=(("control", 0.5), ("discount20", 0.5)),
        metrics=(("order", "primary"), ("unsubscribe", "guardrail")),
        # The expiry windows are the decision (issue 14: only a confirmatory layer is a winner).
        plan={"inference_mode": "fixed", "planned_sample_size": 1, "confirmatory_dimensions": ["expiry"]},
    )
    expiry = Dimension.objects.get(key="expiry")
    populate(
        renewal_experiment,
        [
            Group("control", 1000, {"order": 100, "unsubscribe": 5}, {"expiry": "expiring_soon"}),
            Group("discount20", 1000, {"order": 180, "unsubscribe": 6}, {"expiry": "expiring_soon"}),
            Group("control", 1000, {"order": 100}, {"expiry": "valid"}, day=1),
            Group("discount20", 1000, {"order": 104}, {"expiry": "valid"}, day=1),
            Group("control", 1000, {"order": 200}, {"expiry": "expired_recently"}, day=2, conversion_day=3),
            Group("discount20", 1000, {"order": 130}, {"expiry": "expired_recently"}, day=2, conversion_day=3),
            Group("control", 40, {"order": 4}, {"expiry": "none"}),
            Group("discount20", 40, {"order": 6}, {"expiry": "none"}),
        ],
    )
    renewal = CampaignFactory(
        key="renewal-spring",
        name="Spring renewal",
        kind=Campaign.Kind.RENEWAL,
        status=Campaign.Status.RUNNING,
        started_at=renewal_experiment.started_at,
        experiment=renewal_experiment,
        split_dimension=expiry,
    )
    recipients_from_assignments(renewal)
    Treatment.objects.create(
        campaign=renewal,
        variant_key="discount20",
        offer=OfferFactory(key="renew-20", name="20% off your renewal", value=20),
    )

    winback_experiment = experiment_create(
        key="winback-recall",
        variants=(("control", 0.5), ("comeback", 0.5)),
        plan={"inference_mode": "fixed", "planned_sample_size": 1, "confirmatory_dimensions": ["rfm"]},
    )
    populate(
        winback_experiment,
        [
            Group("control", 1500, {"order": 75}, {"rfm": "important_win_back"}),
            Group("comeback", 1500, {"order": 165}, {"rfm": "important_win_back"}),
            Group("control", 1500, {"order": 75}, {"rfm": "general_win_back"}),
            Group("comeback", 1500, {"order": 81}, {"rfm": "general_win_back"}),
        ],
    )
    winback = CampaignFactory(
        key="winback-recall",
        name="Win-back recall",
        kind=Campaign.Kind.WINBACK,
        status=Campaign.Status.RUNNING,
        started_at=timezone.now(),
        experiment=winback_experiment,
    )
    recipients_from_assignments(winback)
    Treatment.objects.create(
        campaign=winback,
        variant_key="comeback",
        offer=OfferFactory(
            key="comeback-15", name="15 EUR off your next order", benefit_kind="amount_off", value=15, currency="EUR"
        ),
    )
    return Results(renewal, renewal_experiment, winback, winback_experiment)
