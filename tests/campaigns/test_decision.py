"""campaigns.decision: the per-customer decision as pure computation, hand-worked cases.
No database, no Django: the module is importable without settings (import-linter's
"Pure computation has no Django" contract covers it, and the last test checks it in a
fresh interpreter)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from campaigns import decision
from campaigns.decision import Candidate, Split, Term, TreatmentKey, TreatmentTable

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parents[2]

GOLD, SILVER = 11, 12
ASSIGNED_B = Split("b", is_control=False, reason="assigned", assignment_id=501)
ASSIGNED_A = Split("a", is_control=True, reason="assigned", assignment_id=502)
EXPIRES = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)


def table(*rows: tuple[str, int | None, str, int]) -> TreatmentTable:
    return TreatmentTable({TreatmentKey(v, layer, role): pk for v, layer, role, pk in rows})


def candidate(split: Split | None, *, layer_id: int | None = GOLD, covered: bool = True, **kw: object) -> Candidate:
    return Candidate(customer_id=7, step="broadcast", layer_id=layer_id, covered=covered, split=split, **kw)  # type: ignore[arg-type]


def test_table_resolve__variant_layer_and_fallbacks__most_specific_wins() -> None:
    t = table(("b", GOLD, "", 1), ("b", None, "", 2), ("", GOLD, "", 3), ("", None, "", 4))
    assert t.resolve(variant_key="b", is_control=False, layer_id=GOLD) == 1
    assert t.resolve(variant_key="b", is_control=False, layer_id=SILVER) == 2
    assert t.resolve(variant_key="c", is_control=False, layer_id=GOLD) == 3
    assert t.resolve(variant_key="c", is_control=False, layer_id=None) == 4


def test_table_resolve__control__never_takes_any_variant_row() -> None:
    t = table(("", None, "", 4))
    assert t.resolve(variant_key="a", is_control=True, layer_id=GOLD) is None


def test_table_resolve__referral_role__role_row_before_both_roles() -> None:
    t = table(("b", None, "inviter", 5), ("b", None, "", 6))
    assert t.resolve(variant_key="b", is_control=False, layer_id=None, role="inviter") == 5
    assert t.resolve(variant_key="b", is_control=False, layer_id=None, role="invitee") == 6


def test_table_covers__one_variant_missing_a_layer__not_covered_there() -> None:
    t = table(("b", GOLD, "", 1), ("c", None, "", 2))
    assert t.covers(variant_keys=["b", "c"], layer_id=GOLD)
    assert not t.covers(variant_keys=["b", "c"], layer_id=SILVER)
    assert not t.covers(variant_keys=["b"], layer_id=SILVER) and t.covers(variant_keys=["c"], layer_id=SILVER)


def test_decide__not_covered__excluded_no_treatment_and_never_split() -> None:
    v = decision.decide(candidate(None, covered=False), table())
    assert (v.outcome, v.reason, v.assignment_id, v.variant_key) == ("excluded", "no_treatment", None, "")
    assert not v.is_exposed


def test_decide__treated_variant_with_treatment__treated_and_exposed() -> None:
    v = decision.decide(candidate(ASSIGNED_B), table(("b", GOLD, "", 1)))
    assert (v.outcome, v.treatment_id, v.variant_key, v.assignment_id) == ("treated", 1, "b", 501)
    assert v.is_exposed


def test_decide__control_without_treatment__control_would_have_sent_and_exposed() -> None:
    v = decision.decide(candidate(ASSIGNED_A), table(("b", GOLD, "", 1)))
    assert (v.outcome, v.reason, v.treatment_id) == ("control", "assigned", None)
    assert v.is_exposed


def test_decide__control_with_baseline_offer__treated_with_control_treatment() -> None:
    v = decision.decide(candidate(ASSIGNED_A), table(("a", None, "", 9), ("b", None, "", 1)))
    assert (v.outcome, v.treatment_id, v.variant_key) == ("treated", 9, "a")


def test_decide__holdout__holdout_not_exposed() -> None:
    v = decision.decide(candidate(Split("", False, "holdout", None)), table(("b", None, "", 1)))
    assert (v.outcome, v.reason) == ("holdout", "holdout")
    assert not v.is_exposed


def test_decide__engine_did_not_assign__excluded_with_engine_reason() -> None:
    v = decision.decide(candidate(Split("", False, "outside_coverage", None)), table(("b", None, "", 1)))
    assert (v.outcome, v.reason) == ("excluded", "outside_coverage")


def test_decide__treated_variant_without_its_row__excluded_no_treatment() -> None:
    # covered was computed by the caller for other variants; the decision still refuses
    v = decision.decide(candidate(ASSIGNED_B), table(("c", None, "", 2)))
    assert (v.outcome, v.reason, v.treatment_id) == ("excluded", "no_treatment", None)


def test_decide__renewal_term_not_offered__treated_with_membership_and_window() -> None:
    term = Term(membership_id=33, expires_at=EXPIRES, window_key="d7", already_offered=False)
    v = decision.decide(candidate(ASSIGNED_B, term=term), table(("b", GOLD, "", 1)))
    assert (v.outcome, v.membership_id, v.window_key, v.membership_expires) == ("treated", 33, "d7", EXPIRES)


def test_decide__renewal_term_already_offered_in_window__excluded_even_for_holdout() -> None:
    term = Term(membership_id=33, expires_at=EXPIRES, window_key="d7", already_offered=True)
    for split in (ASSIGNED_B, Split("", False, "holdout", None)):
        v = decision.decide(candidate(split, term=term), table(("b", GOLD, "", 1)))
        assert (v.outcome, v.reason, v.membership_id) == ("excluded", "renewal_already_offered", None)


def test_decide__renewal_term_for_control__control_keeps_no_membership() -> None:
    term = Term(membership_id=33, expires_at=EXPIRES, window_key="d7", already_offered=False)
    v = decision.decide(candidate(ASSIGNED_A, term=term), table(("b", GOLD, "", 1)))
    assert (v.outcome, v.membership_id, v.window_key) == ("control", None, "")


def test_decision_module__fresh_interpreter__imports_no_django() -> None:
    code = "import sys, campaigns.decision; print(any(m.split('.')[0] == 'django' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
