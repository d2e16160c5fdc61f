"""GET /api/v1/customers/{external_id}/segments — a customer's layers and segments.

Scope ``segments:read``. 404 for an unknown customer. Only the named customer's rows are
read (by their internal id, looked up from the external id).
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from segments.selectors import customer_get, customer_layers, customer_segments


class LayerOutput(serializers.Serializer):
    dimension = serializers.CharField(help_text="Dimension key, e.g. 'rfm'.")
    dimension_name = serializers.CharField()
    layer = serializers.CharField(help_text="Layer key, e.g. 'important_value'.")
    layer_name = serializers.CharField()
    key = serializers.CharField(source="qualified_key", help_text="'dimension:layer', e.g. 'rfm:important_value'.")
    since = serializers.DateTimeField(help_text="When the customer entered this layer.")
    computed_at = serializers.DateTimeField(allow_null=True, help_text="The dimension's last successful recompute.")
    valid_until = serializers.DateTimeField(allow_null=True, help_text="Membership levels: held at least until then.")


class SegmentOutput(serializers.Serializer):
    segment = serializers.CharField(help_text="Segment key.")
    name = serializers.CharField()
    since = serializers.DateTimeField(help_text="When the customer joined the segment.")
    computed_at = serializers.DateTimeField(allow_null=True, help_text="The segment's last successful recompute.")


class CustomerSegmentsOutput(serializers.Serializer):
    external_id = serializers.CharField()
    layers = LayerOutput(many=True)
    segments = SegmentOutput(many=True)


class CustomerSegmentsView(APIView):
    required_scope = Scope.SEGMENTS_READ

    @extend_schema(
        operation_id="customer_segments",
        summary="A customer's layers and segments",
        description=(
            "Scope `segments:read`. The customer's current layer in each dimension (RFM tier, lifecycle stage, "
            "journey milestone, membership level, expiry window) with when they entered it, and the rule segments "
            "they belong to, each with the time it was last computed. Bounded lists (one entry per dimension "
            "and per active segment), not paginated."
        ),
        responses={200: CustomerSegmentsOutput, 404: OpenApiResponse(description="No customer with this external id.")},
        tags=["segments"],
    )
    def get(self, request: Request, external_id: str) -> Response:
        customer = customer_get(external_id=external_id)
        if customer is None:
            raise NotFound(f"No customer with external_id '{external_id}'.")
        data = {
            "external_id": customer.external_id,
            "layers": customer_layers(customer_id=customer.pk),
            "segments": customer_segments(customer_id=customer.pk),
        }
        return Response(CustomerSegmentsOutput(data).data)


urlpatterns = [
    path("customers/<str:external_id>/segments", CustomerSegmentsView.as_view(), name="customer-segments"),
]
