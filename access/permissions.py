from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from access.models import ApiKey
from access.tokens import CustomerToken


@dataclass(frozen=True)
class CustomerTokenAccess:
    """Declared on a view (``customer_token = CustomerTokenAccess(path_kwarg="external_id")``)
    that an app may call with a customer token, saying where the request names its customer:
    a URL kwarg or a top-level field of the JSON body. A view without it refuses tokens."""

    path_kwarg: str | None = None
    body_field: str | None = None

    def named_customer(self, request: Request, view: Any) -> object:
        if self.path_kwarg is not None:
            return view.kwargs.get(self.path_kwarg)
        data = request.data
        return data.get(self.body_field) if isinstance(data, dict) and self.body_field else None


class HasScope(BasePermission):
    """Grant access when the request's credentials carry the view's ``required_scope``.

    A view without ``required_scope`` is refused: forgetting to declare a scope must
    fail closed, never open. A customer token is further refused on views that do not
    declare ``customer_token``, and on any customer other than its own: 403 whether or not
    that customer exists (checked before any lookup, so nothing about other customers leaks).
    """

    message = "This API key lacks the scope this operation needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.auth
        scope = getattr(view, "required_scope", None)
        if scope is None:
            return False
        if isinstance(principal, ApiKey):
            if not principal.has_scope(scope):
                self.message = f"This API key lacks the '{scope}' scope."
                return False
            return True
        if isinstance(principal, CustomerToken):
            return self._customer_token_allowed(principal, scope, request, view)
        return False

    def _customer_token_allowed(self, token: CustomerToken, scope: str, request: Request, view: Any) -> bool:
        access: CustomerTokenAccess | None = getattr(view, "customer_token", None)
        if access is None:
            self.message = "Customer tokens cannot call this operation; it needs a server API key."
            return False
        if not token.has_scope(scope):
            self.message = f"This customer token's signing key does not grant the '{scope}' scope."
            return False
        named = access.named_customer(request, view)
        if named is None and access.body_field is not None:
            return True  # the body lacks the field: the view's validation answers 400, acting on no one
        if named != token.customer_id:
            self.message = "A customer token acts only for the customer it names ('sub'), not for another."
            return False
        return True
