"""One error shape for the whole API.

``{"detail": "...", "errors": {...}}`` where ``errors`` maps field paths to messages, so
a client always learns which field was wrong. Batch errors use the item index as the
first path element (``"items.3.occurred_at"``).

Every answer under ``/api/`` has this shape, including those no view produced: a body
over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413 naming the limit, and unknown routes (404),
requests refused before any view (400, 403) and unhandled errors (500) are answered by
the ``handler*`` views below, wired in ``config.urls``, which keep Django's HTML pages
everywhere else (the admin).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Flatten DRF's nested error detail into ``{"a.0.b": ["message", ...]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = str(key) if key != "non_field_errors" else ""
            path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            flat.update(flatten_errors(value, path))
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            flat.setdefault(prefix or "non_field_errors", []).extend(str(m) for m in detail)
        else:
            for index, item in enumerate(detail):
                if item:
                    flat.update(flatten_errors(item, f"{prefix}.{index}" if prefix else str(index)))
    else:
        flat.setdefault(prefix or "non_field_errors", []).append(str(detail))
    return flat


# Bodies up to this many times the limit are read (and dropped) before the 413 is sent.
DRAIN_FACTOR = 4


def discard_body(request: HttpRequest) -> None:
    """Read and drop the body Django refused to load. A client sends the whole body before
    it reads the answer; a 413 sent mid-upload reaches most clients as a connection reset
    (measured with urllib against gunicorn). Reading costs only bandwidth (64 KiB at a
    time, nothing kept) and is bounded: past ``DRAIN_FACTOR`` times the limit the
    connection is dropped as before."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if length > DRAIN_FACTOR * settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return
    try:
        while request.read(64 * 1024):
            pass
    except OSError:
        return  # the client went away


def body_too_large_detail() -> str:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return (
        f"The request body is larger than the limit of {limit} bytes ({limit / 2**20:g} MiB). "
        "Send fewer items per batch."
    )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        request = context.get("request")
        if request is not None:
            discard_body(getattr(request, "_request", request))
        return Response({"detail": body_too_large_detail()}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        fields = ", ".join(sorted(errors)) or "request"
        response.data = {"detail": f"Invalid input in: {fields}.", "errors": errors}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"detail": str(response.data["detail"])}
    if response.status_code == status.HTTP_429_TOO_MANY_REQUESTS and "Retry-After" not in response:
        response["Retry-After"] = "1"
    return response


# --- Answers no API view produced (wired as handler400/403/404/500 in config.urls) --------


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _api_error(detail: str, code: int) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=code)


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not _is_api(request):
        return defaults.bad_request(request, exception)  # type: ignore[arg-type]
    if isinstance(exception, RequestDataTooBig):
        discard_body(request)
        return _api_error(body_too_large_detail(), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    return _api_error("Bad request.", status.HTTP_400_BAD_REQUEST)


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not _is_api(request):
        return defaults.permission_denied(request, exception)  # type: ignore[arg-type]
    return _api_error("Forbidden.", status.HTTP_403_FORBIDDEN)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not _is_api(request):
        return defaults.page_not_found(request, exception)  # type: ignore[arg-type]
    return _api_error(
        f"No API route {request.path!r}; the routes are listed in the schema at /api/schema/.",
        status.HTTP_404_NOT_FOUND,
    )


def handler500(request: HttpRequest) -> HttpResponse:
    if not _is_api(request):
        return defaults.server_error(request)
    return _api_error(
        "Internal server error; it was logged (quote the X-Request-ID header when reporting it).",
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
