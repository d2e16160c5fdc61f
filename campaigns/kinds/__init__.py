"""Campaign kinds: one module per kind (new-user incentive, referral reward, renewal by
expiry window, win-back recall, custom). ``campaigns.kinds.base`` documents the contract;
services ask the registry instead of testing ``campaign.kind``."""

from __future__ import annotations

from types import ModuleType

from campaigns.kinds import custom, new_user, referral, renewal, winback
from campaigns.kinds.base import TriggerDefaults

KINDS: dict[str, ModuleType] = {m.KIND: m for m in (new_user, referral, renewal, winback, custom)}


def kind_module(kind: str) -> ModuleType:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown campaign kind '{kind}'; known: {', '.join(KINDS)}") from None


def topic_for(kind: str) -> str:
    """The consent topic of a campaign of ``kind`` when none is chosen."""
    return kind_module(kind).TOPIC


def trigger_defaults(kind: str) -> TriggerDefaults | None:
    return kind_module(kind).TRIGGER_DEFAULTS


__all__ = ["KINDS", "TriggerDefaults", "kind_module", "topic_for", "trigger_defaults"]
