"""The answer to a locked-out admin login (django-axes calls ``lockout_response``).

429 with ``Retry-After``: JSON for clients that ask for it (``Accept: application/json`` or
an XHR), else an admin-styled page. Neither says whether the username exists.
"""

from __future__ import annotations

from typing import Any

from axes.helpers import get_cool_off, get_lockout_message
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

STATUS = 429


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    cool_off = get_cool_off(request)
    retry_after = int(cool_off.total_seconds()) if cool_off else None
    message = str(get_lockout_message())
    accept = request.headers.get("accept", "")
    wants_json = request.headers.get("x-requested-with") == "XMLHttpRequest" or "application/json" in accept
    if wants_json:
        response: HttpResponse = JsonResponse({"detail": message, "retry_after": retry_after}, status=STATUS)
    else:
        context = {"message": message, "retry_after_minutes": (retry_after + 59) // 60 if retry_after else None}
        response = render(request, "access/lockout.html", context, status=STATUS)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response
