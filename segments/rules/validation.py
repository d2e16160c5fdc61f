"""Validate a rule against the schema and the database, with messages that say where.

Every message starts with the path of the offending value, e.g.
``rule.all.1.op: unknown operator 'greater' for an event count; use one of eq, ne, …``.
The structure is checked node by node against the node kind's part of ``RULE_SCHEMA``
(so an error in a child is reported at the child, not as "not valid under any of the
given schemas" at the root); the meaning is checked here: operators that fit the value
type, values of the right type, and event types, tags and layers that exist.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.core.exceptions import ValidationError
from jsonschema import Draft202012Validator

from segments.rules.schema import (
    BOOLEAN_OPS,
    CUSTOMER_FIELDS,
    DATETIME_OPS,
    DATETIME_RELATIVE_OPS,
    DEFS,
    EVENT_AGGS,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_NODES,
    MEMBERSHIP_AGGS,
    NODE_KINDS,
    NUMBER_OPS,
    PRESENCE_OPS,
    SHARE_OPS,
    STRING_OPS,
)


@dataclass(frozen=True)
class RuleIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class RuleValidationError(ValidationError):
    """A rule was refused; ``issues`` lists every problem with its path."""

    def __init__(self, issues: list[RuleIssue]):
        self.issues = issues
        super().__init__([str(issue) for issue in issues])


@dataclass(frozen=True)
class EventTypeRef:
    id: int
    is_monetary: bool


@dataclass
class Catalog:
    """The database objects a rule names, resolved to ids (what the compiler needs)."""

    event_types: dict[str, EventTypeRef] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    layers: dict[str, int] = field(default_factory=dict)
    layer_dimensions: dict[str, int] = field(default_factory=dict)  # layer key -> dimension id


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_KEY_KINDS = ("attribute", "property")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_date(value: str) -> dt.datetime:
    """A date (``YYYY-MM-DD``, midnight UTC) or an ISO 8601 date-time (UTC when naive)."""
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


@cache
def _node_validator(kind: str) -> Draft202012Validator:
    # Children of all/any/not are validated by the walk below (with their own paths).
    schema = copy.deepcopy(DEFS[kind])
    for child in ("all", "any"):
        if child in schema["properties"]:
            schema["properties"][child]["items"] = {}
    if kind == "not":
        schema["properties"]["not"] = {}
    return Draft202012Validator(schema)


def _fmt_path(base: str, parts: Iterable[Any]) -> str:
    return ".".join([base, *(str(p) for p in parts)])


def _schema_messages(kind: str, node: dict[str, Any], path: str) -> list[RuleIssue]:
    return schema_issues(_node_validator(kind), node, path)


def schema_issues(validator: Draft202012Validator, instance: Any, path: str) -> list[RuleIssue]:
    """The validator's errors as readable messages prefixed with the dotted path."""
    issues = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
        where = _fmt_path(path, error.absolute_path)
        instance, schema = error.instance, error.schema
        if error.validator == "additionalProperties":
            allowed = ", ".join(schema.get("properties", {}))
            for extra in sorted(set(instance) - set(schema.get("properties", {}))):
                issues.append(RuleIssue(f"{where}.{extra}", f"unknown field '{extra}'; allowed here: {allowed}"))
        elif error.validator == "required":
            for name in schema["required"]:
                if name not in instance:
                    issues.append(RuleIssue(where, f"missing '{name}'"))
        elif error.validator == "enum":
            what = {"op": "operator", "agg": "aggregate", "field": "field"}.get(
                str(error.absolute_path[-1]) if error.absolute_path else "", "value"
            )
            issues.append(
                RuleIssue(where, f"unknown {what} {json.dumps(instance)}; use one of: {', '.join(schema['enum'])}")
            )
        elif error.validator == "pattern" and error.absolute_path and error.absolute_path[-1] in _KEY_KINDS:
            kind = str(error.absolute_path[-1])
            issues.append(
                RuleIssue(
                    where,
                    f"{json.dumps(instance)} is not {_article(kind)} {kind} key (a letter or '_', then letters, "
                    "digits, '_' or '-')",
                )
            )
        elif error.validator == "pattern" and error.absolute_path and error.absolute_path[-1] == "layer":
            issues.append(RuleIssue(where, f"{json.dumps(instance)} is not a layer key 'dimension:layer'"))
        elif error.validator == "type":
            expected = schema["type"] if isinstance(schema["type"], str) else " or ".join(schema["type"])
            issues.append(RuleIssue(where, f"must be {expected}, got {_json_type(instance)}"))
        elif error.validator == "minItems" and isinstance(instance, list):
            issues.append(RuleIssue(where, f"needs at least {schema['minItems']} item(s), got {len(instance)}"))
        elif error.validator == "maxItems" and isinstance(instance, list):
            issues.append(RuleIssue(where, f"takes at most {schema['maxItems']} item(s), got {len(instance)}"))
        elif error.validator in ("minProperties", "maxProperties") and "last_days" in schema.get("properties", {}):
            issues.append(RuleIssue(where, 'a window is either {"last_days": N} or {"between": [from, to]}'))
        else:
            issues.append(RuleIssue(where, error.message))
    return issues


class _Walker:
    def __init__(self) -> None:
        self.issues: list[RuleIssue] = []
        self.nodes = 0
        # (path, code, needs an amount)
        self.event_refs: list[tuple[str, str, bool]] = []
        self.tag_refs: list[tuple[str, str]] = []
        self.layer_refs: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.issues.append(RuleIssue(path, message))

    # --- structure -----------------------------------------------------------------
    def walk(self, node: Any, path: str, depth: int) -> None:
        self.nodes += 1
        if self.nodes == MAX_NODES + 1:
            self.add(path, f"a rule has at most {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            self.add(path, f"rules nest at most {MAX_DEPTH} levels deep")
            return
        if not isinstance(node, dict):
            self.add(path, f"must be an object (a rule node), got {_json_type(node)}")
            return
        kinds = [k for k in NODE_KINDS if k in node]
        if not kinds:
            keys = ", ".join(f"'{k}'" for k in node) or "none"
            self.add(path, f"unknown rule node (keys: {keys}); a node is one of: {', '.join(NODE_KINDS)}")
            return
        if len(kinds) > 1:
            self.add(path, f"a node has one kind, got {' and '.join(repr(k) for k in kinds)}")
            return
        kind = kinds[0]
        schema_issues = _schema_messages(kind, node, path)
        if schema_issues:
            self.issues.extend(schema_issues)
            return
        getattr(self, f"_check_{kind}")(node, path, depth)

    def _check_all(self, node: dict[str, Any], path: str, depth: int) -> None:
        for index, child in enumerate(node["all"]):
            self.walk(child, f"{path}.all.{index}", depth + 1)

    def _check_any(self, node: dict[str, Any], path: str, depth: int) -> None:
        for index, child in enumerate(node["any"]):
            self.walk(child, f"{path}.any.{index}", depth + 1)

    def _check_not(self, node: dict[str, Any], path: str, depth: int) -> None:
        self.walk(node["not"], f"{path}.not", depth + 1)

    def _check_field(self, node: dict[str, Any], path: str, depth: int) -> None:
        value_type = CUSTOMER_FIELDS[node["field"]]
        self._check_comparison(node, path, value_type, f"the field '{node['field']}'", nullable=True)

    def _check_attribute(self, node: dict[str, Any], path: str, depth: int) -> None:
        self._check_json_key(node, path, "attribute")

    def _check_where(self, where: list[dict[str, Any]] | None, path: str) -> None:
        """Event property conditions: the same typed comparisons as attributes."""
        for index, condition in enumerate(where or []):
            self._check_json_key(condition, f"{path}.{index}", "property")

    def _check_json_key(self, node: dict[str, Any], path: str, kind: str) -> None:
        op, value = node["op"], node.get("value")
        if "__" in node[kind]:
            self.add(f"{path}.{kind}", f"{_article(kind)} {kind} key cannot contain '__'")
            return
        if op in PRESENCE_OPS:
            self._check_comparison(node, path, "string", f"{_article(kind)} {kind}", nullable=True)
            return
        if isinstance(value, list):
            types = {_json_type(v) for v in value}
            if len(types) != 1:
                self.add(f"{path}.value", "list values must all be strings or all numbers")
                return
            value_type = types.pop()
        elif value is None:
            self.add(path, f"missing 'value' for operator '{op}'")
            return
        else:
            value_type = _json_type(value)
        self._check_comparison(node, path, value_type, f"a {value_type} {kind}", nullable=True)

    def _check_tag(self, node: dict[str, Any], path: str, depth: int) -> None:
        self.tag_refs.append((f"{path}.tag", node["tag"]))

    def _check_layer(self, node: dict[str, Any], path: str, depth: int) -> None:
        self.layer_refs.append((f"{path}.layer", node["layer"]))

    def _check_event(self, node: dict[str, Any], path: str, depth: int) -> None:
        agg = node["agg"]
        self.event_refs.append((f"{path}.event", node["event"], agg == "sum"))
        self._check_where(node.get("where"), f"{path}.where")
        self._check_window(node.get("window"), f"{path}.window")
        label = {"count": "an event count", "sum": "an event amount sum", "first": "a first-event time"}.get(
            agg, "a last-event time"
        )
        self._check_comparison(node, path, EVENT_AGGS[agg], label, nullable=agg in ("first", "last"))

    def _check_membership(self, node: dict[str, Any], path: str, depth: int) -> None:
        agg = node["agg"]
        if MEMBERSHIP_AGGS[agg] == "none":
            for extra in ("op", "value"):
                if extra in node:
                    self.add(f"{path}.{extra}", f"'{agg}' is a yes/no test and takes no '{extra}'")
            return
        if "op" not in node:
            self.add(path, "missing 'op'")
            return
        label = {"count": "a membership count", "latest_expiry": "the latest expiry"}.get(agg, "the first start")
        self._check_comparison(node, path, MEMBERSHIP_AGGS[agg], label, nullable=agg != "count")

    def _check_rank(self, node: dict[str, Any], path: str, depth: int) -> None:
        rank = node["rank"]
        self.event_refs.append((f"{path}.rank.event", rank["event"], rank["agg"] == "sum"))
        self._check_window(rank.get("window"), f"{path}.rank.window")

    def _check_share(self, node: dict[str, Any], path: str, depth: int) -> None:
        share = node["share"]
        self.event_refs.append((f"{path}.share.event", share["event"], False))
        self._check_where(share["where"], f"{path}.share.where")
        self._check_window(share.get("window"), f"{path}.share.window")
        op, value, vpath = node["op"], node["value"], f"{path}.value"
        fraction = "a fraction from 0 to 1 (0.5 = half of the events)"
        if op == "between":
            if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)):
                self.add(vpath, f"'between' takes a list of two numbers [low, high], each {fraction}")
            elif not all(0 <= v <= 1 for v in value):
                self.add(vpath, f"each bound must be {fraction}")
            elif value[0] > value[1]:
                self.add(vpath, f"low ({value[0]}) is greater than high ({value[1]})")
        elif op in SHARE_OPS:
            if not _is_number(value):
                self.add(vpath, f"must be {fraction}, got {_json_type(value)}")
            elif not 0 <= value <= 1:
                self.add(vpath, f"must be {fraction}, got {json.dumps(value)}")

    # --- values ----------------------------------------------------------------------
    def _check_window(self, window: dict[str, Any] | None, path: str) -> None:
        if not window or "between" not in window:
            return
        self._check_date_range(window["between"], f"{path}.between")

    def _check_date_range(self, value: Any, path: str) -> None:
        if not (isinstance(value, list) and len(value) == 2):
            self.add(path, "must be a list of two dates [from, to]")
            return
        parsed = []
        for index, item in enumerate(value):
            parsed.append(self._parse_date(item, f"{path}.{index}"))
        if None not in parsed and parsed[0] > parsed[1]:
            self.add(path, f"'from' ({value[0]}) is after 'to' ({value[1]})")

    def _parse_date(self, value: Any, path: str) -> dt.datetime | None:
        if not isinstance(value, str):
            self.add(path, f"must be a date 'YYYY-MM-DD' or an ISO 8601 date-time, got {_json_type(value)}")
            return None
        try:
            return parse_date(value)
        except ValueError:
            self.add(path, f"'{value}' is not a date 'YYYY-MM-DD' or an ISO 8601 date-time")
            return None

    def _check_comparison(self, node: dict[str, Any], path: str, value_type: str, label: str, nullable: bool) -> None:
        op = node["op"]
        has_value = "value" in node
        value = node.get("value")
        allowed = {
            "number": NUMBER_OPS,
            "string": STRING_OPS,
            "boolean": BOOLEAN_OPS,
            "datetime": DATETIME_OPS,
        }[value_type] + (PRESENCE_OPS if nullable else ())
        if op not in allowed:
            self.add(f"{path}.op", f"operator '{op}' does not apply to {label}; use one of: {', '.join(allowed)}")
            return
        vpath = f"{path}.value"
        if op in PRESENCE_OPS:
            if has_value:
                self.add(vpath, f"'{op}' takes no value")
            return
        if not has_value:
            self.add(path, f"missing 'value' for operator '{op}'")
            return
        if value_type == "datetime":
            if op in DATETIME_RELATIVE_OPS:
                if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_DAYS):
                    self.add(vpath, f"'{op}' takes a whole number of days (0–{MAX_DAYS}), got {json.dumps(value)}")
            elif op == "between":
                self._check_date_range(value, vpath)
            else:
                self._parse_date(value, vpath)
            return
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                self.add(vpath, f"'{op}' takes a non-empty list, got {_json_type(value)}")
            elif not all(_json_type(v) == value_type for v in value):
                self.add(vpath, f"every item must be a {value_type}")
            return
        if op == "between":
            if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)):
                self.add(vpath, "'between' takes a list of two numbers [low, high]")
            elif value[0] > value[1]:
                self.add(vpath, f"low ({value[0]}) is greater than high ({value[1]})")
            return
        if _json_type(value) != value_type:
            self.add(vpath, f"must be a {value_type} for '{op}' on {label}, got {_json_type(value)}")


def _resolve(walker: _Walker) -> Catalog:
    from segments.models import EventType, Layer, Tag

    catalog = Catalog()
    if walker.event_refs:
        codes = {code for _, code, _ in walker.event_refs}
        rows = EventType.objects.filter(code__in=codes).values_list("code", "id", "is_monetary")
        catalog.event_types = {code: EventTypeRef(id=pk, is_monetary=monetary) for code, pk, monetary in rows}
        for path, code, needs_amount in walker.event_refs:
            ref = catalog.event_types.get(code)
            if ref is None:
                known = ", ".join(EventType.objects.order_by("code").values_list("code", flat=True)[:50])
                walker.add(path, f"unknown event type '{code}'; known: {known}")
            elif needs_amount and not ref.is_monetary:
                walker.add(path, f"event type '{code}' carries no amount: 'sum' needs a monetary event type")
    if walker.tag_refs:
        codes = {code for _, code in walker.tag_refs}
        catalog.tags = dict(Tag.objects.filter(code__in=codes).values_list("code", "id"))
        for path, code in walker.tag_refs:
            if code not in catalog.tags:
                walker.add(path, f"unknown tag '{code}'")
    if walker.layer_refs:
        wanted = {key for _, key in walker.layer_refs}
        dims = {key.split(":", 1)[0] for key in wanted}
        rows = Layer.objects.filter(dimension__key__in=dims).values_list("dimension__key", "key", "id", "dimension_id")
        catalog.layers = {f"{d}:{k}": pk for d, k, pk, _ in rows}
        catalog.layer_dimensions = {f"{d}:{k}": dim for d, k, _, dim in rows}
        for path, key in walker.layer_refs:
            if key not in catalog.layers:
                walker.add(path, f"unknown layer '{key}' (use 'dimension:layer', e.g. 'rfm:important_value')")
    return catalog


def rule_check(rule: Any, *, path: str = "rule") -> tuple[list[RuleIssue], Catalog]:
    """Every problem of ``rule`` (empty when valid) and the objects it names."""
    walker = _Walker()
    walker.walk(rule, path, 0)
    # Names are resolved even when the structure has problems, so one save reports both.
    catalog = _resolve(walker)
    return walker.issues, catalog


def rule_validate(rule: Any, *, path: str = "rule") -> Catalog:
    """Raise ``RuleValidationError`` (a Django ValidationError) listing every problem."""
    issues, catalog = rule_check(rule, path=path)
    if issues:
        raise RuleValidationError(issues)
    return catalog
