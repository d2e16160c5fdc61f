from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from access.models import ApiKey


class HasScope(BasePermission):
    """Grant access when the request's API key carries the view's ``required_scope``.

    A view without ``required_scope`` is refused: forgetting to declare a scope must
    fail closed, never open.
    """

    message = "This API key lacks the scope this operation needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return False
        scope = getattr(view, "required_scope", None)
        if scope is None:
            return False
        if not api_key.has_scope(scope):
            self.message = f"This API key lacks the '{scope}' scope."
            return False
        return True
