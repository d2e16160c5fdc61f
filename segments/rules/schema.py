"""The JSON Schema of segment rules (draft 2020-12) and its vocabulary.

A rule is a tree. Inner nodes combine, leaves test one fact about a customer::

    {"all": [rule, ...]}            every child matches
    {"any": [rule, ...]}            at least one child matches
    {"not": rule}                   the child does not match (exact complement)
    {"field": F, "op": OP, "value": V}                    a customer column
    {"attribute": KEY, "op": OP, "value": V}              a key of Customer.attributes
    {"tag": CODE}                                         has the tag
    {"layer": "DIMENSION:LAYER"}                          currently in the layer
    {"event": TYPE, "where": [P, ...], "agg": AGG, "window": W, "op": OP, "value": V}
    {"share": {"event": TYPE, "where": [P, ...], "window": W}, "op": OP, "value": FRACTION}
    {"membership": {"plan": P, "level": L}, "agg": AGG, "op": OP, "value": V}
    {"rank": {"event": TYPE, "agg": "sum"|"count", "window": W}, "top_percent": P, "among": "all"|"with_value"}

    W = {"last_days": N} | {"between": ["YYYY-MM-DD", "YYYY-MM-DD"]}   (optional; default: all time)
    P = {"property": KEY, "op": OP, "value": V}   a key of Event.properties (as attributes:
        typed comparisons, "exists" / "not_exists"); every P must hold (optional)

``where`` narrows the events counted, e.g. the orders of product TP
(``{"property": "product", "op": "eq", "value": "TP"}``). ``share`` is the fraction of the
customer's TYPE events in the window that match ``where`` (e.g. the share of orders with
a coupon), compared with a number from 0 to 1; undefined, so false, without such events.

The schema below is the contract; ``segments.rules.validation`` applies the part of it
that matches a node's kind, so messages name the node's path, and adds what a schema
cannot know (event types, tags and layers that exist; operators that fit the value type).
"""

from __future__ import annotations

from typing import Any

# Operators, by the type of the value they compare.
NUMBER_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between", "in", "not_in")
STRING_OPS = ("eq", "ne", "in", "not_in", "contains", "starts_with")
BOOLEAN_OPS = ("eq", "ne")
DATETIME_RELATIVE_OPS = ("within_last_days", "before_days_ago", "within_next_days", "after_days_from_now")
DATETIME_ABSOLUTE_OPS = ("on_or_after", "before", "between")
DATETIME_OPS = DATETIME_RELATIVE_OPS + DATETIME_ABSOLUTE_OPS
PRESENCE_OPS = ("exists", "not_exists")
ALL_OPS = tuple(dict.fromkeys(NUMBER_OPS + STRING_OPS + DATETIME_OPS + PRESENCE_OPS))

# Customer columns a rule may test, with their value type.
CUSTOMER_FIELDS: dict[str, str] = {
    "signed_up_at": "datetime",
    "created_at": "datetime",
    "external_id": "string",
    "email": "string",
    "phone": "string",
    "locale": "string",
    "timezone": "string",
}

EVENT_AGGS: dict[str, str] = {"count": "number", "sum": "number", "first": "datetime", "last": "datetime"}
MEMBERSHIP_AGGS: dict[str, str] = {
    "active": "none",  # has a term running now; takes no op/value
    "count": "number",
    "latest_expiry": "datetime",
    "first_start": "datetime",
}
RANK_AGGS = ("count", "sum")
SHARE_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between")
MAX_WHERE = 10
MAX_DAYS = 36_500
# Attribute keys are identifiers: a letter or '_' first, then letters, digits, '_' or '-'.
ATTRIBUTE_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
MAX_DEPTH = 12
MAX_NODES = 200

_days = {"type": "integer", "minimum": 0, "maximum": MAX_DAYS}
_date = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}([T ].*)?$"}
_scalar = {"type": ["string", "number", "boolean"]}
_value = {
    "oneOf": [
        _scalar,
        {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1, "maxItems": 1000},
    ]
}
_window = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "last_days": {"type": "integer", "minimum": 1, "maximum": MAX_DAYS},
        "between": {"type": "array", "prefixItems": [_date, _date], "minItems": 2, "maxItems": 2},
    },
}

PROPERTY_CONDITION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["property", "op"],
    "properties": {
        "property": {"type": "string", "pattern": ATTRIBUTE_KEY_PATTERN, "maxLength": 100},
        "op": {"enum": list(ALL_OPS)},
        "value": _value,
    },
}
_where = {"type": "array", "minItems": 1, "maxItems": MAX_WHERE, "items": PROPERTY_CONDITION}

DEFS: dict[str, dict[str, Any]] = {
    "all": {
        "type": "object",
        "additionalProperties": False,
        "required": ["all"],
        "properties": {"all": {"type": "array", "minItems": 1, "items": {"$ref": "#"}}},
    },
    "any": {
        "type": "object",
        "additionalProperties": False,
        "required": ["any"],
        "properties": {"any": {"type": "array", "minItems": 1, "items": {"$ref": "#"}}},
    },
    "not": {
        "type": "object",
        "additionalProperties": False,
        "required": ["not"],
        "properties": {"not": {"$ref": "#"}},
    },
    "field": {
        "type": "object",
        "additionalProperties": False,
        "required": ["field", "op"],
        "properties": {"field": {"enum": list(CUSTOMER_FIELDS)}, "op": {"enum": list(ALL_OPS)}, "value": _value},
    },
    "attribute": {
        "type": "object",
        "additionalProperties": False,
        "required": ["attribute", "op"],
        "properties": {
            "attribute": {"type": "string", "pattern": ATTRIBUTE_KEY_PATTERN, "maxLength": 100},
            "op": {"enum": list(ALL_OPS)},
            "value": _value,
        },
    },
    "tag": {
        "type": "object",
        "additionalProperties": False,
        "required": ["tag"],
        "properties": {"tag": {"type": "string", "minLength": 1, "maxLength": 32}},
    },
    "layer": {
        "type": "object",
        "additionalProperties": False,
        "required": ["layer"],
        "properties": {"layer": {"type": "string", "pattern": r"^[-a-zA-Z0-9_]+:[-a-zA-Z0-9_]+$"}},
    },
    "event": {
        "type": "object",
        "additionalProperties": False,
        "required": ["event", "agg", "op"],
        "properties": {
            "event": {"type": "string", "minLength": 1, "maxLength": 64},
            "where": _where,
            "agg": {"enum": list(EVENT_AGGS)},
            "window": _window,
            "op": {"enum": list(ALL_OPS)},
            "value": _value,
        },
    },
    "membership": {
        "type": "object",
        "additionalProperties": False,
        "required": ["membership", "agg"],
        "properties": {
            "membership": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "plan": {"type": "string", "minLength": 1, "maxLength": 64},
                    "level": {"type": "string", "minLength": 1, "maxLength": 64},
                },
            },
            "agg": {"enum": list(MEMBERSHIP_AGGS)},
            "op": {"enum": list(ALL_OPS)},
            "value": _value,
        },
    },
    "rank": {
        "type": "object",
        "additionalProperties": False,
        "required": ["rank", "top_percent"],
        "properties": {
            "rank": {
                "type": "object",
                "additionalProperties": False,
                "required": ["event", "agg"],
                "properties": {
                    "event": {"type": "string", "minLength": 1, "maxLength": 64},
                    "agg": {"enum": list(RANK_AGGS)},
                    "window": _window,
                },
            },
            "top_percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
            "among": {"enum": ["all", "with_value"]},
        },
    },
    "share": {
        "type": "object",
        "additionalProperties": False,
        "required": ["share", "op", "value"],
        "properties": {
            "share": {
                "type": "object",
                "additionalProperties": False,
                "required": ["event", "where"],
                "properties": {
                    "event": {"type": "string", "minLength": 1, "maxLength": 64},
                    "where": _where,
                    "window": _window,
                },
            },
            "op": {"enum": list(SHARE_OPS)},
            "value": _value,
        },
    },
}

# The key that tells a node's kind, in the order they are recognised.
NODE_KINDS: tuple[str, ...] = tuple(DEFS)

RULE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:growth:segments:rule",
    "title": "Segment rule",
    "oneOf": [{"$ref": f"#/$defs/{kind}"} for kind in NODE_KINDS],
    "$defs": DEFS,
}
