"""The campaign-kind registry (campaigns.kinds): every Campaign.Kind has one module, and the
pure decision's outcomes are the Recipient outcomes the database stores."""

from __future__ import annotations

import pytest

from campaigns import decision, kinds
from campaigns.models import Campaign, Recipient, Topic


def test_kinds_registry__every_campaign_kind__has_one_module() -> None:
    assert set(kinds.KINDS) == set(Campaign.Kind.values)


def test_kinds_registry__topics_and_trigger_defaults__are_valid_choices() -> None:
    for kind in Campaign.Kind.values:
        assert kinds.topic_for(kind) in Topic.values
        defaults = kinds.trigger_defaults(kind)
        assert defaults is None or defaults.trigger in Campaign.Trigger.values


def test_kinds_registry__unknown_kind__value_error_naming_known_kinds() -> None:
    with pytest.raises(ValueError, match="unknown campaign kind 'nope'; known: new_user"):
        kinds.kind_module("nope")


def test_kind_rules__referral_reward_to__roles_checked_per_rewarded_role() -> None:
    referral = kinds.kind_module("referral")
    assert referral.roles(Campaign(kind="referral", referral_reward_to="inviter")) == ["inviter"]
    assert referral.roles(Campaign(kind="referral", referral_reward_to="both")) == ["inviter", "invitee"]
    assert kinds.kind_module("winback").roles(Campaign(kind="winback")) == [""]


def test_kind_rules__renewal_without_split_dimension__issue_on_split_dimension() -> None:
    issues = kinds.kind_module("renewal").config_issues(Campaign(kind="renewal"))
    assert [field for field, _ in issues] == ["split_dimension"]
    assert kinds.kind_module("custom").config_issues(Campaign(kind="custom", trigger="layer_entry")) == []


def test_decision_outcomes__pure_constants__equal_recipient_outcomes() -> None:
    pure = {decision.TREATED, decision.CONTROL, decision.HOLDOUT, decision.EXCLUDED}
    assert pure == set(Recipient.Outcome.values)


def test_kinds_registry__every_module__provides_the_base_contract() -> None:
    for kind, module in kinds.KINDS.items():
        missing = [
            name
            for name in ("KIND", "TOPIC", "TRIGGER_DEFAULTS", "OFFERS_PER_TERM", "REFERRALS", "roles", "config_issues")
            if not hasattr(module, name)
        ]
        assert not missing, f"{kind}: {missing}"
    assert [k for k, m in kinds.KINDS.items() if m.OFFERS_PER_TERM] == ["renewal"]
    assert [k for k, m in kinds.KINDS.items() if m.REFERRALS] == ["referral"]
