"""The sign-up wave after launch: deterministic, and each inviter's act is recorded."""

from __future__ import annotations

import datetime as dt

import pytest

from demo.wave import Inviter, wave_build

ANCHOR = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)
INVITERS = (Inviter("c-000001", "RAAA"), Inviter("c-000002", "RBBB"), Inviter("c-000003", "RCCC"))


def build(**overrides):
    args = {"seed": 7, "signups": 4, "invitees": 5, "inviters": INVITERS, "anchor": ANCHOR}
    args["super_referrer_invitees"] = 2
    return wave_build(**{**args, **overrides})


@pytest.mark.pure
def test_wave_build__inviters_with_friends__each_sends_one_invite_before_any_friend_signs_up() -> None:
    wave = build()
    invites = [e for e in wave.events if e["type"] == "referral_invite_sent"]
    referred = [e for e in wave.events if e["type"] == "referral_signup" and "referrer_id" in e["properties"]]
    # Every inviter whose friends signed up sent exactly one invitation, nobody else did.
    assert sorted(e["customer_id"] for e in invites) == sorted({e["properties"]["referrer_id"] for e in referred})
    assert len(invites) == len(INVITERS)
    first_friend = min(dt.datetime.fromisoformat(e["occurred_at"]) for e in referred)
    for invite in invites:
        assert dt.datetime.fromisoformat(invite["occurred_at"]) <= first_friend
        assert invite["properties"]["via"] in {"link", "email", "sms"}
    ids = [e["event_id"] for e in wave.events]
    assert len(ids) == len(set(ids))


@pytest.mark.pure
def test_wave_build__same_inputs__same_events_and_no_inviters_no_invites() -> None:
    assert build() == build()
    assert not [e for e in build(inviters=()).events if e["type"] == "referral_invite_sent"]
