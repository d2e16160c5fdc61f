"""Limit/offset pagination that says when its parameters are wrong.

DRF's ``LimitOffsetPagination`` silently ignores a ``limit`` or ``offset`` it cannot read
(``?limit=abc`` is the default page) and passes any integer through to SQL, where
``?limit=9223372036854775808`` overflows ``bigint`` (a 500). Here a malformed or negative
value is a 400 naming the parameter, ``limit`` above ``max_limit`` is capped to it (as
documented), and ``offset`` is bounded by ``MAX_OFFSET``.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

MAX_OFFSET = 1_000_000_000
# OpenAPI schemas of the two parameters, for views that declare them by hand.
LIMIT_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1}
OFFSET_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}


def _integer(request: Request, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    bound = f"an integer from {minimum}" + (f" to {maximum}" if maximum is not None else "")
    text = raw.strip()
    # Digits only: int() would also take "+5", " 5", "5_000" and non-ASCII digits.
    if not (text.isascii() and text.isdigit() and len(text) <= 1000):
        raise ValidationError({name: [f"Expected {bound}; got '{raw[:32]}'."]})
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        raise ValidationError({name: [f"Expected {bound}; got {text[:32]}."]})
    return value


class ApiPagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 500

    def get_limit(self, request: Request) -> int:
        value = _integer(request, self.limit_query_param, minimum=1, maximum=None)
        if value is None:
            return self.default_limit
        return min(value, self.max_limit) if self.max_limit else value

    def get_offset(self, request: Request) -> int:
        return _integer(request, self.offset_query_param, minimum=0, maximum=MAX_OFFSET) or 0

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"] = dict(LIMIT_SCHEMA)
                default, cap = self.default_limit, self.max_limit
                parameter["description"] = f"Page size (default {default}; above {cap} is capped)."
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"] = dict(OFFSET_SCHEMA)
        return parameters
