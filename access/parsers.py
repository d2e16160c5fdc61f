"""The API's JSON parser: DRF's, plus a bound on nesting.

Python's JSON decoder recurses once per level and fails with ``RecursionError`` near 1,000
levels (an HTML 500 before this parser); a body nested a few hundred levels deep also
makes every later recursive walk (validation, jsonb encoding, error flattening) costly.
No record this API takes needs more than a few levels, so bodies nested deeper than
``MAX_JSON_DEPTH`` are refused with a 400 in the API's error shape. The size of a body is
bounded before parsing by ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413, see ``access.exceptions``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Levels of objects/arrays, the body itself being level 1 (a batch item's properties
# object is level 4: body → items → item → properties).
MAX_JSON_DEPTH = 64


def deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` levels; iterative, so
    it cannot itself overflow the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class TooDeep(ParseError):
    default_code = "too_deep"


class JsonParser(JSONParser):
    """``application/json`` (strict: NaN and Infinity refused), at most ``MAX_JSON_DEPTH`` levels."""

    def parse(
        self, stream: IO[bytes] | None, media_type: str | None = None, parser_context: Mapping | None = None
    ) -> Any:
        raw = stream.read() if stream is not None else b""
        message = f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels of objects and arrays."
        try:
            data = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise TooDeep(message) from None
        # Counting brackets is C-fast and bounds the depth from above: most bodies skip the walk.
        if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and deeper_than(data, MAX_JSON_DEPTH):
            raise TooDeep(message)
        return data
