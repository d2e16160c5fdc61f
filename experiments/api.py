"""Assignment API.

Routes (under ``/api/v1/``):

- ``GET  customers/{external_id}/assignments[?experiment=key][&expose=false]`` (scope
  ``offers:read``): the customer's variant and payload in every running experiment (or the
  one named), assigning on first request and recording an exposure; experiments the
  customer is not in say why (``reason``). Paused experiments are listed with
  ``not_running``. Only the requested customer's decisions are returned; seeds, weights
  and phases never are. An experiment a campaign owns is never assigned or exposed here:
  the campaign's decision is reported, else ``campaign_managed``.
- ``POST exposures`` (scope ``events:write``): client-side exposure logging, for clients
  that fetch with ``expose=false`` and log when the variant is actually shown; an
  ``occurred_at`` outside the experiment (before the assignment or phase start, or in the
  future, beyond the clock skew) is refused on ``occurred_at``.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from access.pagination import LIMIT_SCHEMA, OFFSET_SCHEMA, ApiPagination
from access.permissions import CustomerTokenAccess
from experiments import selectors, services
from experiments.selectors import ExperimentConfig
from segments import selectors as segment_selectors


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


class DecisionSerializer(serializers.Serializer):
    experiment = serializers.CharField(source="experiment_key", help_text="The experiment key.")
    variant = serializers.CharField(
        source="variant_key", allow_null=True, help_text="The variant key; null when not in the experiment."
    )
    is_control = serializers.BooleanField()
    payload = serializers.DictField(help_text="The variant's payload ({} when not in the experiment).")
    in_experiment = serializers.BooleanField()
    reason = serializers.ChoiceField(
        choices=[r.value for r in services.Reason],
        help_text=(
            "assigned; not_targeted (outside the targeting); outside_coverage (outside the traffic "
            "coverage); holdout (in the global holdout); namespace (the customer's slot of the "
            "namespace belongs to another experiment); not_running (paused, draft or stopped); "
            "campaign_managed (a campaign owns the experiment and has not assigned this customer: only "
            "the campaign assigns and exposes in it; a customer it assigned gets the campaign's variant, "
            "and no exposure is recorded by this call)."
        ),
    )


class AssignmentsQuerySerializer(serializers.Serializer):
    experiment = serializers.SlugField(required=False, max_length=64, help_text="Only this experiment (its key).")
    expose = serializers.BooleanField(
        required=False, default=True, help_text="Record an exposure (default true). Use false to prefetch."
    )


class AssignmentsPagination(ApiPagination):
    default_limit = 100
    max_limit = 500


def _not_running(key: str) -> services.AssignmentDecision:
    return services.AssignmentDecision(
        experiment_key=key,
        variant_key=None,
        is_control=False,
        payload={},
        reason=services.Reason.NOT_RUNNING,
        assignment_id=None,
    )


class CustomerAssignmentsView(APIView):
    required_scope = Scope.OFFERS_READ
    customer_token = CustomerTokenAccess(path_kwarg="external_id")
    pagination_class = AssignmentsPagination

    @extend_schema(
        operation_id="customer_assignments",
        summary="A customer's variants (assigns on first request). Scope: offers:read.",
        parameters=[
            OpenApiParameter("external_id", OpenApiTypes.STR, OpenApiParameter.PATH),
            AssignmentsQuerySerializer,
            OpenApiParameter("limit", LIMIT_SCHEMA, description="Page size (default 100; above 500 is capped)."),
            OpenApiParameter("offset", OFFSET_SCHEMA, description="Entries to skip."),
        ],
        responses={
            200: DecisionSerializer(many=True),
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            404: OpenApiResponse(ErrorSerializer, description="Unknown customer or experiment."),
        },
    )
    def get(self, request: Request, external_id: str) -> Response:
        query = AssignmentsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        customer = segment_selectors.customer_get(external_id=external_id, with_layers=True)
        if customer is None:
            raise NotFound(f"Unknown customer '{external_id}'.")
        configs: list[ExperimentConfig] = list(selectors.experiment_configs().values())
        key = query.validated_data.get("experiment")
        extra: list[services.AssignmentDecision] = []
        if key:
            configs = [c for c in configs if c.key == key]
            if not configs:
                if selectors.experiment_get(key=key) is None:
                    raise NotFound(f"Unknown experiment '{key}'.")
                extra = [_not_running(key)]  # draft or stopped
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(configs or extra, request, view=self) or []
        if extra:
            decisions = list(page)
        else:
            decisions = services.customer_decisions(
                configs=page,
                customer=customer,
                expose=query.validated_data["expose"],
                layers=customer.current_layers,  # type: ignore[attr-defined]  # read with the customer
            )
        return paginator.get_paginated_response(DecisionSerializer(decisions, many=True).data)


class ExposureInSerializer(serializers.Serializer):
    customer_id = serializers.CharField(max_length=128, help_text="The customer's external_id.")
    experiment = serializers.SlugField(max_length=64, help_text="The experiment key.")
    variant = serializers.SlugField(max_length=64, help_text="The variant the customer saw.")
    occurred_at = serializers.DateTimeField(
        required=False,
        help_text=(
            "When it was shown (default: now), with a time zone. Refused (400 on occurred_at) when it is before "
            "the customer's assignment or the experiment's current phase start, or in the future, by more than "
            "the allowed clock skew (GROWTH_EXPOSURE_CLOCK_SKEW_SECONDS, 300 s); within it, clamped to "
            "[assignment time, now]."
        ),
    )


class ExposureOutSerializer(serializers.Serializer):
    experiment = serializers.CharField(source="experiment.key")
    variant = serializers.CharField(source="variant.key", help_text="The assigned variant.")
    first_exposed_at = serializers.DateTimeField()
    exposure_count = serializers.IntegerField()
    conflicting = serializers.BooleanField(
        source="conflicting_exposure", help_text="The customer saw a variant other than the assigned one."
    )


class ExposuresView(APIView):
    required_scope = Scope.EVENTS_WRITE
    customer_token = CustomerTokenAccess(body_field="customer_id")

    @extend_schema(
        operation_id="exposure_log",
        summary="Log that a customer saw a variant. Scope: events:write.",
        request=ExposureInSerializer,
        responses={
            200: ExposureOutSerializer,
            400: OpenApiResponse(
                ErrorSerializer,
                description="Invalid input, no assignment (`experiment`), or a time outside the experiment "
                "(`occurred_at`).",
            ),
            401: ErrorSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        data = ExposureInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values: dict[str, Any] = data.validated_data
        customer = segment_selectors.customer_get(external_id=values["customer_id"])
        if customer is None:
            raise NotFound(f"Unknown customer '{values['customer_id']}'.")
        experiment = selectors.experiment_get(key=values["experiment"])
        if experiment is None:
            raise NotFound(f"Unknown experiment '{values['experiment']}'.")
        if experiment.managed_by:
            # The owner (a campaign) records exposures when it acts; a client's would count
            # customers the campaign never treated (see experiments.services.ownership).
            raise serializers.ValidationError(
                {"experiment": [f"campaign_managed: experiment '{experiment.key}' is run by its campaign."]}
            )
        assignment = services.exposure_log(
            experiment=experiment, customer=customer, variant_key=values["variant"], at=values.get("occurred_at")
        )
        return Response(ExposureOutSerializer(assignment).data, status=status.HTTP_200_OK)


urlpatterns = [
    path(
        "customers/<str:external_id>/assignments",
        CustomerAssignmentsView.as_view(),
        name="customer-assignments",
    ),
    path("exposures", ExposuresView.as_view(), name="exposures"),
]
