"""Computed dimensions: one module per kind (rfm, lifecycle, journey, level, expiry, value_rank).

Each module documents its layers, its config and the rules that place a customer; see
``segments.dimensions.base`` for the contract.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from segments.dimensions import expiry, journey, level, lifecycle, rfm, value_rank
from segments.dimensions.base import LayerSpec, StageContext
from segments.rules.validation import RuleIssue

KINDS: dict[str, ModuleType] = {m.KIND: m for m in (rfm, lifecycle, journey, level, expiry, value_rank)}


def kind_module(kind: str) -> ModuleType:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown dimension kind '{kind}'; known: {', '.join(KINDS)}") from None


def config_issues(kind: str, config: Any, path: str = "config") -> list[RuleIssue]:
    if kind not in KINDS:
        return [RuleIssue("kind", f"unknown dimension kind '{kind}'; known: {', '.join(KINDS)}")]
    return kind_module(kind).config_issues(config, path)


def default_config(kind: str) -> dict[str, Any]:
    return kind_module(kind).default_config()


def layer_specs(kind: str, config: dict[str, Any]) -> list[LayerSpec]:
    return kind_module(kind).layer_specs(config)


__all__ = ["KINDS", "LayerSpec", "StageContext", "config_issues", "default_config", "kind_module", "layer_specs"]
