"""The per-customer decision of a campaign, as pure computation (no Django, no database).

``campaigns.services.decide`` reads a batch (customers, their layer, their experiment split,
their membership term) in one query per kind, turns it into ``Candidate`` values and a
``TreatmentTable``, calls ``decide`` once per customer, and writes the resulting
``Verdict`` values set-based. Sending (channels, consent, quiet hours, caps) is decided
afterwards by the services, from the verdicts; it is not part of this module.

The rules, in order (intent to treat):

1. Symmetric exposure: a customer is split only where every treated (non-control) variant
   has a treatment for their layer and referral role (``TreatmentTable.covers``); anyone
   else is excluded with reason ``no_treatment`` and never assigned nor exposed. Otherwise
   control's "would have sent" rows would stand for customers no treated variant reaches
   (185 control vs 103 treated, measured on the demo).
2. A renewal offer is made once per membership term and expiry window
   (``renewal_already_offered``).
3. Holdout → ``holdout``; not assigned by the experiment → ``excluded`` (the engine's reason).
4. Assigned: the most specific treatment (``TreatmentTable.resolve``); control without a
   treatment → ``control`` (the baseline "would have sent"); a treated variant without one
   → ``excluded`` / ``no_treatment``.

Outcome values equal ``campaigns.models.Recipient.Outcome`` (a database test checks it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TREATED = "treated"
CONTROL = "control"
HOLDOUT = "holdout"
EXCLUDED = "excluded"

NO_TREATMENT = "no_treatment"
RENEWAL_ALREADY_OFFERED = "renewal_already_offered"


@dataclass(frozen=True)
class TreatmentKey:
    """Which customers a treatment is for: ``variant_key`` "" is any variant (never control),
    ``layer_id`` None any layer, ``role`` "" both referral roles."""

    variant_key: str
    layer_id: int | None
    role: str = ""


class TreatmentTable:
    """Resolves (variant, layer, role) to the most specific treatment id of a campaign."""

    def __init__(self, treatments: Mapping[TreatmentKey, int]) -> None:
        self._by_key = {(k.variant_key, k.layer_id, k.role): pk for k, pk in treatments.items()}

    def resolve(self, *, variant_key: str, is_control: bool, layer_id: int | None, role: str = "") -> int | None:
        """Most specific first: the variant before "any variant" (never for control), the
        layer before "any layer", the referral role before "both roles"."""
        variants = [variant_key] if is_control else [variant_key, ""]
        roles = [role, ""] if role else [""]
        for r in roles:
            for v in variants:
                for layer in (layer_id, None):
                    treatment_id = self._by_key.get((v, layer, r))
                    if treatment_id is not None:
                        return treatment_id
        return None

    def covers(self, *, variant_keys: Iterable[str], layer_id: int | None, role: str = "") -> bool:
        """Every treated variant acts on a customer of ``layer_id`` (and ``role``)."""
        return all(
            self.resolve(variant_key=key, is_control=False, layer_id=layer_id, role=role) is not None
            for key in variant_keys
        )


@dataclass(frozen=True)
class Split:
    """The experiment's answer for one customer (built by ``campaigns.services.assignments``)."""

    variant_key: str
    is_control: bool
    reason: str  # "assigned" | "holdout" | "not_targeted" | "outside_coverage" | "not_running" | "namespace"
    assignment_id: int | None

    @property
    def is_assigned(self) -> bool:
        return self.reason == "assigned"


@dataclass(frozen=True)
class Term:
    """A renewal's membership term and the expiry window the customer is in."""

    membership_id: int
    expires_at: dt.datetime
    window_key: str
    already_offered: bool


@dataclass(frozen=True)
class Candidate:
    customer_id: int
    step: str
    layer_id: int | None
    covered: bool
    split: Split | None  # None when not covered (never split)
    role: str = ""
    term: Term | None = None


@dataclass(frozen=True)
class Verdict:
    customer_id: int
    step: str
    outcome: str
    reason: str
    variant_key: str
    assignment_id: int | None
    layer_id: int | None
    treatment_id: int | None = None
    membership_id: int | None = None
    window_key: str = ""
    membership_expires: dt.datetime | None = None

    @property
    def is_exposed(self) -> bool:
        """Counted by the experiment: treated, or control's "would have sent"."""
        return self.assignment_id is not None and self.outcome in (TREATED, CONTROL)


def decide(candidate: Candidate, table: TreatmentTable) -> Verdict:
    """One customer's outcome (see the module docstring for the rules). Called once per
    customer of a batch: positional construction keeps it at about a microsecond or two."""
    c = candidate
    split = c.split
    if not c.covered or split is None:
        return Verdict(c.customer_id, c.step, EXCLUDED, NO_TREATMENT, "", None, c.layer_id)
    term = c.term if c.layer_id is not None else None
    key, assignment_id = split.variant_key, split.assignment_id
    if term is not None and term.already_offered:
        return Verdict(c.customer_id, c.step, EXCLUDED, RENEWAL_ALREADY_OFFERED, key, assignment_id, c.layer_id)
    if split.reason == "holdout":
        return Verdict(c.customer_id, c.step, HOLDOUT, split.reason, key, assignment_id, c.layer_id)
    if split.reason != "assigned":
        return Verdict(c.customer_id, c.step, EXCLUDED, split.reason, key, assignment_id, c.layer_id)
    treatment_id = table.resolve(variant_key=key, is_control=split.is_control, layer_id=c.layer_id, role=c.role)
    if treatment_id is None:
        outcome, reason = (CONTROL, split.reason) if split.is_control else (EXCLUDED, NO_TREATMENT)
        return Verdict(c.customer_id, c.step, outcome, reason, key, assignment_id, c.layer_id)
    if term is None:
        return Verdict(c.customer_id, c.step, TREATED, split.reason, key, assignment_id, c.layer_id, treatment_id)
    return Verdict(
        c.customer_id,
        c.step,
        TREATED,
        split.reason,
        key,
        assignment_id,
        c.layer_id,
        treatment_id,
        term.membership_id,
        term.window_key,
        term.expires_at,
    )
