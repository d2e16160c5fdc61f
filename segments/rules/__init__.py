"""Segment rules: a JSON schema, validation with messages that say where, and a compiler
to one ORM query. See ``segments.rules.schema`` for the format and
``segments.rules.compiler`` for the semantics."""

from segments.rules.compiler import rule_compile, rule_queryset
from segments.rules.schema import RULE_SCHEMA
from segments.rules.validation import Catalog, RuleIssue, RuleValidationError, rule_check, rule_validate

__all__ = [
    "RULE_SCHEMA",
    "Catalog",
    "RuleIssue",
    "RuleValidationError",
    "rule_check",
    "rule_compile",
    "rule_queryset",
    "rule_validate",
]
