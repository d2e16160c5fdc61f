"""The sign-up wave after the triggered campaigns launched: new customers (``wave-…``) and
friends invited by existing customers with their personal referral code (``friend-…``).

A pure function of its inputs (seed, counts, the launch instant, the inviters and their
codes): the same inputs give the same rows with the same event ids, so ingesting the wave
twice stores nothing new. Rows have the import files' shape (customers as CSV-like dicts,
events as JSON-like dicts) and go through the same parsers as the import commands.

Each inviter whose friends sign up in the wave first sends an invitation
(``referral_invite_sent``, one per inviter, at the launch instant: before any friend's
sign-up), as in the generated history: AARRR's Referral step counts the inviter's act, not
the friend's sign-up.

Referred friends also emit a ``signup`` event (a referral sign-up is a sign-up); the
new-user campaign excludes them through the "referred customers" rule segment, so each
newcomer is in exactly one of the two triggered campaigns.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from demo.generator import INVITE_VIA, MARKETS, PERSONAS, DemoSpec, _customer_row, _pick, _ts

# Shows a refused attribution in the referral audit.
UNKNOWN_CODE = "RNOSUCHCODE"


@dataclass(frozen=True)
class Inviter:
    external_id: str
    code: str


@dataclass(frozen=True)
class Wave:
    customers: tuple[dict[str, Any], ...]
    events: tuple[dict[str, Any], ...]


def _when(anchor: dt.datetime, index: int) -> str:
    # Within the first second after launch (the wave is ingested after it), so the event
    # times never depend on when the pipeline happens to run.
    moment = anchor + dt.timedelta(milliseconds=1 + index % 997)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _newcomer(spec: DemoSpec, external_id: str, rng: random.Random, signed_up: dt.datetime, channel: str) -> dict:
    market = _pick(rng, MARKETS, [m.weight for m in MARKETS])
    persona = _pick(rng, PERSONAS, [p.weight for p in PERSONAS])
    row = _customer_row(rng, spec, external_id, market, persona, signed_up, channel)
    # Consent is given at sign-up (the generator spreads it over the following days).
    for name, value in row.items():
        if name.endswith(("_consent_at", "_opt_out_at")) and value:
            row[name] = _ts(signed_up) if name.endswith("_consent_at") else ""
    return row


def wave_build(
    *,
    seed: int,
    signups: int,
    invitees: int,
    inviters: Sequence[Inviter],
    anchor: dt.datetime,
    super_referrer_invitees: int = 0,
) -> Wave:
    """``signups`` organic newcomers and ``invitees`` friends spread over ``inviters`` (the
    first inviter also gets ``super_referrer_invitees`` more, past the campaign's cap)."""
    spec = DemoSpec(customers=1, seed=seed, end=anchor + dt.timedelta(days=1))
    signed_up = anchor + dt.timedelta(milliseconds=1)
    customers: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for i in range(signups):
        ext = f"wave-{i:06d}"
        rng = random.Random(f"{seed}:wave:{i}")
        channel = _pick(rng, ("organic", "paid_search", "social"), [5, 3, 2])
        customers.append(_newcomer(spec, ext, rng, signed_up, channel))
        events.append(
            {
                "event_id": f"demo-wave-signup-{ext}",
                "customer_id": ext,
                "type": "signup",
                "occurred_at": _when(anchor, i),
                "properties": {"channel": channel},
            }
        )
    referrers: list[Inviter] = []
    if inviters:
        referrers = [inviters[0]] * super_referrer_invitees
        referrers += [inviters[i % len(inviters)] for i in range(invitees)]
    invited: set[str] = set()
    for j, inviter in enumerate(referrers):
        if inviter.external_id not in invited:
            invited.add(inviter.external_id)
            via = _pick(random.Random(f"{seed}:invite:{inviter.external_id}"), INVITE_VIA, [5, 3, 2])
            events.append(
                {
                    "event_id": f"demo-wave-invite-{inviter.external_id}",
                    "customer_id": inviter.external_id,
                    "type": "referral_invite_sent",
                    "occurred_at": anchor.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "properties": {"via": via},
                }
            )
        ext = f"friend-{j:06d}"
        rng = random.Random(f"{seed}:friend:{j}")
        customers.append(_newcomer(spec, ext, rng, signed_up, "referral"))
        when = _when(anchor, signups + j)
        events.append(
            {
                "event_id": f"demo-wave-signup-{ext}",
                "customer_id": ext,
                "type": "signup",
                "occurred_at": when,
                "properties": {"channel": "referral"},
            }
        )
        events.append(
            {
                "event_id": f"demo-wave-referral-{ext}",
                "customer_id": ext,
                "type": "referral_signup",
                "occurred_at": when,
                "properties": {"referral_code": inviter.code, "referrer_id": inviter.external_id},
            }
        )
    if referrers:
        # Refused attributions, audited: an inviter using their own code, and an unknown code.
        own = referrers[-1]
        events.append(
            {
                "event_id": f"demo-wave-referral-self-{own.external_id}",
                "customer_id": own.external_id,
                "type": "referral_signup",
                "occurred_at": _when(anchor, 0),
                "properties": {"referral_code": own.code},
            }
        )
        events.append(
            {
                "event_id": "demo-wave-referral-unknown-code",
                "customer_id": "friend-000000",
                "type": "referral_signup",
                "occurred_at": _when(anchor, 1),
                "properties": {"referral_code": UNKNOWN_CODE},
            }
        )
    return Wave(tuple(customers), tuple(events))
