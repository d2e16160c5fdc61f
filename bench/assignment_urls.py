"""The benchmark URLconf: the whole app plus the anchor, a bare DRF endpoint returning one
customer row by primary key. It goes through the same middleware, authentication (API key),
scope check and throttle as the assignment endpoint, so the ratio measures what assigning
adds to an authenticated one-row read. Mounted only by ``bench.assignment_settings``."""

from __future__ import annotations

from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from config.urls import urlpatterns as app_urlpatterns
from segments.models import Customer


class AnchorCustomerView(APIView):
    required_scope = Scope.OFFERS_READ

    def get(self, request: Request, pk: int) -> Response:
        row = Customer.objects.filter(pk=pk).values("id", "external_id", "timezone", "locale", "created_at").first()
        if row is None:
            return Response({"detail": "Not found."}, status=404)
        return Response(row)


urlpatterns = [path("bench/anchor/<int:pk>", AnchorCustomerView.as_view()), *app_urlpatterns]
