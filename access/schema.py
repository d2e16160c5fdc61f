"""OpenAPI post-processing: every authenticated operation documents the answers the
access layer gives before a view runs (401, 403, 429), in the API's one error shape."""

from __future__ import annotations

from typing import Any

ERROR_COMPONENT = "ApiError"
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, in words."},
        "errors": {
            "type": "object",
            "description": "Field path → messages, e.g. `items.3.occurred_at`.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "required": ["detail"],
}
ACCESS_RESPONSES = {
    "401": "No credentials; an unknown or revoked API key; or a customer token that is invalid, expired, "
    "too long-lived or signed with an unknown or revoked key.",
    "403": "The API key lacks the scope this operation needs; or a customer token on an operation that "
    "needs a server key, or naming another customer.",
    "429": "Too many requests for this API key (or customer token's customer); retry after `Retry-After` seconds.",
}


BODY_RESPONSES = {
    "413": "The request body is over the size limit (`DATA_UPLOAD_MAX_MEMORY_SIZE`, 10 MiB by default).",
}


def add_access_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault(ERROR_COMPONENT, ERROR_SCHEMA)
    ref = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or not operation.get("security"):
                continue
            responses = operation.setdefault("responses", {})
            for code, description in ACCESS_RESPONSES.items():
                response: dict[str, Any] = {
                    "description": description,
                    "content": {"application/json": {"schema": ref}},
                }
                if code == "429":
                    response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}
                responses.setdefault(code, response)
            if operation.get("requestBody"):
                for code, description in BODY_RESPONSES.items():
                    responses.setdefault(
                        code, {"description": description, "content": {"application/json": {"schema": ref}}}
                    )
    return result
