"""The offer API and coupon redemption.

- ``GET  /api/v1/customers/{external_id}/offers`` (``offers:read``): the customer's answer
  from every running campaign — an offer (variant, benefit, coupon, expiry, in-app message)
  or why there is none (not_in_audience, not_triggered, holdout, control, capped,
  no_consent, …). Only the named customer's rows are ever read.
- ``POST /api/v1/coupons/{code}/redeem`` (``coupons:redeem``): redeem a coupon once.
- ``GET  /api/v1/customers/{external_id}/referral-code`` (``offers:read``): the customer's
  personal referral code, created on first request.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from access.pagination import LIMIT_SCHEMA, OFFSET_SCHEMA, ApiPagination
from access.permissions import CustomerTokenAccess
from campaigns.services.offers import CouponError, coupon_redeem, customer_offers, offer_campaigns
from campaigns.services.referrals import referral_code_get_or_create
from segments.selectors import customers_queryset


class CampaignErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


def _errors(**extra: str) -> dict[int, OpenApiResponse]:
    """This operation's own error answers (401/403/429 are added to every operation by
    ``access.schema``)."""
    return {
        int(code.lstrip("_")): OpenApiResponse(CampaignErrorSerializer, description=description)
        for code, description in extra.items()
    }


class BenefitSerializer(serializers.Serializer):
    offer = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.CharField()
    value = serializers.CharField()
    currency = serializers.CharField(allow_blank=True)
    description = serializers.CharField()


class MessageSerializer(serializers.Serializer):
    title = serializers.CharField(allow_blank=True)
    body = serializers.CharField(allow_blank=True)


class CampaignRefSerializer(serializers.Serializer):
    key = serializers.CharField(source="campaign_key")
    name = serializers.CharField(source="campaign_name")
    kind = serializers.CharField(source="campaign_kind")


class CustomerOfferSerializer(serializers.Serializer):
    campaign = CampaignRefSerializer(source="*")
    status = serializers.ChoiceField(choices=["offer", "none"])
    reason = serializers.CharField(allow_blank=True, help_text="Why there is no offer.")
    variant = serializers.CharField(source="variant_key", allow_blank=True)
    benefit = BenefitSerializer(allow_null=True)
    coupon_code = serializers.CharField(allow_blank=True)
    coupon_redeemed = serializers.BooleanField()
    expires_at = serializers.DateTimeField(allow_null=True)
    message = MessageSerializer(allow_null=True, help_text="The rendered in-app message, if the campaign has one.")


class CustomerOffersPageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Running campaigns answering for this customer.")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = CustomerOfferSerializer(many=True)


class CustomerOffersView(APIView):
    required_scope = Scope.OFFERS_READ
    customer_token = CustomerTokenAccess(path_kwarg="external_id")
    pagination_class = ApiPagination

    @extend_schema(
        operation_id="customer_offers",
        description="Scope `offers:read`. The customer's current offers, one entry per running campaign, "
        "with the reason when there is none. Assigns the customer through the campaign's experiment on "
        "first request.",
        parameters=[
            OpenApiParameter("limit", LIMIT_SCHEMA, description="Page size (default 100; above 500 is capped)."),
            OpenApiParameter("offset", OFFSET_SCHEMA, description="Entries to skip."),
        ],
        responses={
            200: CustomerOffersPageSerializer,
            **_errors(_400="Invalid `limit` or `offset` (named in `errors`).", _404="Unknown customer."),
        },
    )
    def get(self, request: Request, external_id: str) -> Response:
        customer = get_object_or_404(customers_queryset(), external_id=external_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(offer_campaigns(), request, view=self)
        answers = customer_offers(customer=customer, campaigns=page or [])
        return paginator.get_paginated_response(CustomerOfferSerializer(answers, many=True).data)


class RedeemInputSerializer(serializers.Serializer):
    customer_id = serializers.CharField(max_length=128, help_text="The customer's external id.")
    reference = serializers.CharField(max_length=128, required=False, default="", allow_blank=True)


class RedeemOutputSerializer(serializers.Serializer):
    code = serializers.CharField()
    customer_id = serializers.CharField(source="customer.external_id")
    offer = serializers.CharField(source="offer.key")
    benefit = serializers.CharField(source="offer.describe")
    redeemed_at = serializers.DateTimeField()
    reference = serializers.CharField(source="redemption_ref")


class CouponConflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "already_redeemed"


class CouponGone(exceptions.APIException):
    status_code = status.HTTP_410_GONE
    default_code = "expired"


class CouponRedeemView(APIView):
    required_scope = Scope.COUPONS_REDEEM

    @extend_schema(
        operation_id="coupon_redeem",
        description="Scope `coupons:redeem`. Redeem a coupon for its customer, once: of concurrent attempts "
        "exactly one succeeds (200); the others get 409. An unknown code, or one that is not this "
        "customer's, is 404; an expired one 410. Writes a `coupon_redeemed` event.",
        request=RedeemInputSerializer,
        responses={
            200: RedeemOutputSerializer,
            **_errors(
                _400="Invalid body (the field is named in `errors`).",
                _404="Unknown code, or not this customer's.",
                _409="Already redeemed.",
                _410="Expired.",
                _415="The body is not `application/json`.",
            ),
        },
    )
    def post(self, request: Request, code: str) -> Response:
        data = RedeemInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        customer = customers_queryset().filter(external_id=data.validated_data["customer_id"]).first()
        if customer is None:
            raise exceptions.NotFound(f"No coupon '{code}' for customer '{data.validated_data['customer_id']}'.")
        try:
            coupon = coupon_redeem(code=code, customer=customer, reference=data.validated_data["reference"])
        except CouponError as exc:
            if exc.code == "already_redeemed":
                raise CouponConflict(exc.message) from exc
            if exc.code == "expired":
                raise CouponGone(exc.message) from exc
            raise exceptions.NotFound(exc.message) from exc
        return Response(RedeemOutputSerializer(coupon).data)


class ReferralCodeSerializer(serializers.Serializer):
    customer_id = serializers.CharField(source="customer.external_id")
    code = serializers.CharField()


class ReferralCodeView(APIView):
    required_scope = Scope.OFFERS_READ
    customer_token = CustomerTokenAccess(path_kwarg="external_id")

    @extend_schema(
        operation_id="customer_referral_code",
        description="Scope `offers:read`. The customer's personal referral code (created on first request). "
        "Invitees are attributed by an event of the referral campaign's trigger type carrying "
        "`properties.referral_code`.",
        responses={200: ReferralCodeSerializer, **_errors(_404="Unknown customer.")},
    )
    def get(self, request: Request, external_id: str) -> Response:
        customer = get_object_or_404(customers_queryset(), external_id=external_id)
        code = referral_code_get_or_create(customer=customer)
        return Response(ReferralCodeSerializer(code).data)
