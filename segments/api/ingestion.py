"""Ingestion API: upsert customers and memberships, post events (one, or batches of up to
``settings.GROWTH["MAX_BATCH"]``).

Routes (under ``/api/v1/``):

- ``PUT  customers/{external_id}``   upsert one customer (201 created, 200 updated)
- ``POST customers/batch``           upsert up to 1,000 customers
- ``POST events``                    record one event (201 created, 200 replay, 409 conflict)
- ``POST events/batch``              record up to 1,000 events
- ``POST memberships``               upsert one membership term (201 created, 200 updated)
- ``POST memberships/batch``         upsert up to 1,000 membership terms

Batches validate every item. Valid items are stored even when others are not ("nothing
valid is lost"): 200 when every item was accepted, 207 Multi-Status when some were
rejected (``errors`` names each as ``items.<index>.<field>``), and 400 (409 when every
item is an event conflict) when none was. Replaying a batch is safe: events are
deduplicated by ``event_id`` and upserts converge to the same state.

Records are validated by ``segments.importing.parse_*`` (shared with the import
commands); the serializers below describe the same rules for the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from segments.importing import (
    CURRENCY_RE,
    LOCALE_RE,
    RecordError,
    event_type_map,
    parse_customer,
    parse_event,
    parse_membership,
    time_zone_names,
)
from segments.models import Customer, Event, Membership
from segments.services.ingestion import (
    IngestResult,
    Outcome,
    customers_upsert,
    events_record,
    memberships_upsert,
)

# --- Schema-describing serializers (validation is done by the shared parsers) ----------

TIMESTAMP_HELP = "ISO 8601 with a UTC offset (e.g. 2024-05-01T12:30:00+02:00); naive timestamps are refused."


@extend_schema_field(
    {
        "oneOf": [
            {"type": "number"},
            {"type": "string", "pattern": r"^-?\d{1,12}(\.\d{1,2})?$"},
        ],
        "description": "A decimal amount with at most 2 decimal places, as a number or a string.",
    }
)
class AmountField(serializers.Field):
    pass


class IngestionErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Field path (batch items: items.<index>.<field>) → messages.",
    )


class CustomerFieldsSerializer(serializers.Serializer):
    signed_up_at = serializers.DateTimeField(required=False, allow_null=True, help_text=TIMESTAMP_HELP)
    timezone = serializers.ChoiceField(
        choices=sorted(time_zone_names()), required=False, help_text="IANA time zone name."
    )
    locale = serializers.RegexField(
        LOCALE_RE.pattern,
        max_length=35,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="BCP 47 tag, e.g. pt-BR; null or empty clears it.",
    )
    attributes = serializers.DictField(required=False, allow_null=True, help_text="Free attributes (JSON object).")
    email = serializers.EmailField(required=False, allow_blank=True, allow_null=True, max_length=254)
    email_consent_at = serializers.DateTimeField(required=False, allow_null=True)
    email_opt_out_at = serializers.DateTimeField(required=False, allow_null=True)
    phone = serializers.RegexField(
        r"^(\+[1-9]\d{6,14})?$", required=False, allow_blank=True, allow_null=True, help_text="E.164, e.g. +336…"
    )
    sms_consent_at = serializers.DateTimeField(required=False, allow_null=True)
    sms_opt_out_at = serializers.DateTimeField(required=False, allow_null=True)
    push_token = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=255)
    push_consent_at = serializers.DateTimeField(required=False, allow_null=True)
    push_opt_out_at = serializers.DateTimeField(required=False, allow_null=True)
    roles = serializers.ListField(
        child=serializers.SlugField(max_length=32),
        required=False,
        allow_null=True,
        max_length=10,
        help_text='The customer\'s whole set of roles (e.g. ["buyer", "seller"]); null or [] clears it, '
        "absent keeps it. Unknown roles are refused (400 on roles).",
    )


class CustomerInSerializer(CustomerFieldsSerializer):
    """Fields sent are set; fields left out keep their stored value."""

    external_id = serializers.CharField(max_length=128, required=False, help_text="Must match the path if given.")


class CustomerBatchItemSerializer(CustomerFieldsSerializer):
    external_id = serializers.CharField(max_length=128)


class CustomerOutSerializer(serializers.ModelSerializer):
    email = serializers.CharField(read_only=True, help_text="An email address, or empty.")
    roles = serializers.SerializerMethodField(help_text="The customer's role keys.")

    @extend_schema_field({"type": "array", "items": {"type": "string"}})
    def get_roles(self, customer: Customer) -> list[str]:
        return sorted(customer.customer_roles.values_list("role__key", flat=True))

    class Meta:
        model = Customer
        fields = [
            "external_id",
            "signed_up_at",
            "timezone",
            "locale",
            "attributes",
            "email",
            "email_consent_at",
            "email_opt_out_at",
            "phone",
            "sms_consent_at",
            "sms_opt_out_at",
            "push_token",
            "push_consent_at",
            "push_opt_out_at",
            "roles",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class EventInSerializer(serializers.Serializer):
    event_id = serializers.CharField(
        max_length=128,
        help_text="Client-supplied; makes ingestion idempotent. Ids starting with `platform:` are reserved (400).",
    )
    customer_id = serializers.CharField(max_length=128, help_text="The customer's external_id.")
    type = serializers.CharField(
        max_length=64,
        help_text="An event type code (built in: signup, login, visit, add_to_cart, order, …). "
        "`coupon_redeemed` is written by the platform when a coupon is redeemed and refused here (400).",
    )
    occurred_at = serializers.DateTimeField(help_text=TIMESTAMP_HELP)
    properties = serializers.DictField(required=False, allow_null=True)
    amount = AmountField(required=False, allow_null=True, help_text="Required for monetary types (order, refund…).")
    currency = serializers.RegexField(
        CURRENCY_RE.pattern, required=False, allow_blank=True, allow_null=True, help_text="ISO 4217, e.g. EUR."
    )


class EventOutSerializer(serializers.ModelSerializer):
    customer_id = serializers.CharField(source="customer.external_id")
    type = serializers.CharField(source="event_type.code")

    class Meta:
        model = Event
        fields = ["event_id", "customer_id", "type", "occurred_at", "received_at", "properties", "amount", "currency"]
        read_only_fields = fields


class MembershipInSerializer(serializers.Serializer):
    customer_id = serializers.CharField(max_length=128, help_text="The customer's external_id.")
    plan = serializers.CharField(max_length=64)
    level = serializers.CharField(max_length=64, required=False, allow_blank=True, allow_null=True)
    started_at = serializers.DateTimeField(help_text=TIMESTAMP_HELP)
    expires_at = serializers.DateTimeField(help_text="After started_at. " + TIMESTAMP_HELP)


class MembershipOutSerializer(serializers.ModelSerializer):
    customer_id = serializers.CharField(source="customer.external_id")

    class Meta:
        model = Membership
        fields = ["customer_id", "plan", "level", "started_at", "expires_at", "created_at", "updated_at"]
        read_only_fields = fields


def _batch_of(child: type[serializers.Serializer], name: str) -> type[serializers.Serializer]:
    return type(
        name,
        (serializers.Serializer,),
        {
            "items": serializers.ListField(
                child=child(), min_length=1, max_length=settings.GROWTH["MAX_BATCH"], help_text="1 to 1,000 items."
            )
        },
    )


CustomerBatchSerializer = _batch_of(CustomerBatchItemSerializer, "CustomerBatchSerializer")
EventBatchSerializer = _batch_of(EventInSerializer, "EventBatchSerializer")
MembershipBatchSerializer = _batch_of(MembershipInSerializer, "MembershipBatchSerializer")


class BatchResultSerializer(serializers.Serializer):
    detail = serializers.CharField()
    received = serializers.IntegerField()
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    duplicates = serializers.IntegerField(help_text="Events already stored with the same body (nothing stored).")
    rejected = serializers.IntegerField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), help_text="items.<index>.<field> → messages."
    )


class BatchRejectedSerializer(IngestionErrorSerializer):
    """A 400 on a batch: the envelope was invalid (no counts), or every item was rejected."""

    received = serializers.IntegerField(required=False)
    created = serializers.IntegerField(required=False)
    updated = serializers.IntegerField(required=False)
    duplicates = serializers.IntegerField(required=False)
    rejected = serializers.IntegerField(required=False)


# --- Helpers ------------------------------------------------------------------------


def _record_errors(exc: RecordError, prefix: str = "") -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for name, message in exc.errors.items():
        key = ".".join(part for part in (prefix, name) if part) or "non_field_errors"
        errors.setdefault(key, []).append(message)
    return errors


def _batch_items(request: Request) -> list[Any]:
    data = request.data
    limit = settings.GROWTH["MAX_BATCH"]
    if not isinstance(data, dict) or "items" not in data:
        raise ValidationError({"items": [f'Send {{"items": [...]}} with 1 to {limit} items.']})
    items = data["items"]
    if not isinstance(items, list):
        raise ValidationError({"items": [f"Expected a list, got {type(items).__name__}."]})
    if not items:
        raise ValidationError({"items": ["Send at least one item."]})
    if len(items) > limit:
        raise ValidationError({"items": [f"At most {limit} items per batch; got {len(items)}. Split the batch."]})
    return items


def _run_batch(
    request: Request,
    *,
    parse: Callable[[Any], Any],
    write: Callable[[Sequence[Any]], IngestResult],
) -> Response:
    items = _batch_items(request)
    errors: dict[str, list[str]] = {}
    valid: list[Any] = []
    positions: list[int] = []
    for index, item in enumerate(items):
        try:
            valid.append(parse(item))
            positions.append(index)
        except RecordError as exc:
            errors.update(_record_errors(exc, f"items.{index}"))
    counts = {outcome: 0 for outcome in Outcome}
    if valid:
        for result in write(valid).items:
            counts[result.outcome] += 1
            if result.outcome.is_error:
                key = ".".join(p for p in ("items", str(positions[result.index]), result.field) if p)
                errors.setdefault(key, []).append(result.message)
    rejected = len(items) - len(valid) + sum(counts[outcome] for outcome in Outcome if outcome.is_error)
    if rejected == 0:
        code, detail = status.HTTP_200_OK, f"All {len(items)} items were accepted."
    elif rejected < len(items):
        code = status.HTTP_207_MULTI_STATUS
        detail = f"{rejected} of {len(items)} items were rejected (see errors); the others were stored."
    else:
        only_conflicts = counts[Outcome.CONFLICT] == len(items)
        code = status.HTTP_409_CONFLICT if only_conflicts else status.HTTP_400_BAD_REQUEST
        detail = f"All {len(items)} items were rejected (see errors); nothing was stored."
    body = {
        "detail": detail,
        "received": len(items),
        "created": counts[Outcome.CREATED],
        "updated": counts[Outcome.UPDATED],
        "duplicates": counts[Outcome.DUPLICATE],
        "rejected": rejected,
        "errors": errors,
    }
    return Response(body, status=code)


def _scope_note(scope: str) -> str:
    return f"\n\nRequires an API key with the `{scope}` scope."


COMMON_ERRORS = {
    400: OpenApiResponse(IngestionErrorSerializer, description="Malformed JSON or invalid fields (named in `errors`)."),
    401: OpenApiResponse(IngestionErrorSerializer, description="Missing, invalid or revoked API key."),
    403: OpenApiResponse(IngestionErrorSerializer, description="The API key lacks this operation's scope."),
    415: OpenApiResponse(IngestionErrorSerializer, description="The body is not `application/json`."),
    429: OpenApiResponse(IngestionErrorSerializer, description="Too many requests for this key; see `Retry-After`."),
}
BATCH_RESPONSES = {
    200: OpenApiResponse(BatchResultSerializer, description="Every item was accepted."),
    207: OpenApiResponse(
        BatchResultSerializer, description="Some items were rejected (listed in `errors`); the others were stored."
    ),
    **COMMON_ERRORS,
    400: OpenApiResponse(
        BatchRejectedSerializer,
        description="Every item was rejected, or the envelope is invalid (not `{items: [...]}`, empty, "
        "over 1,000 items, malformed JSON).",
    ),
}


# --- Customers ----------------------------------------------------------------------


class CustomerUpsertApi(APIView):
    required_scope = Scope.CUSTOMERS_WRITE

    @extend_schema(
        operation_id="customer_upsert",
        tags=["ingestion"],
        summary="Create or update one customer",
        description=(
            "Upsert by `external_id`: the fields sent are set, the fields left out keep their stored value "
            "(a new customer gets the defaults: time zone UTC, locale en). `null` clears a timestamp, a "
            "contact point, the locale or the attributes (the time zone cannot be cleared). "
            "201 when the customer was created, 200 when it was updated. "
            "(An `external_id` of exactly `batch` or containing `/` can only be sent through the batch route.)"
            + _scope_note(Scope.CUSTOMERS_WRITE)
        ),
        parameters=[OpenApiParameter("external_id", OpenApiTypes.STR, OpenApiParameter.PATH)],
        request=CustomerInSerializer,
        responses={
            200: OpenApiResponse(CustomerOutSerializer, description="Updated."),
            201: OpenApiResponse(CustomerOutSerializer, description="Created."),
            **COMMON_ERRORS,
        },
    )
    def put(self, request: Request, external_id: str) -> Response:
        data = request.data
        if not isinstance(data, dict):
            raise ValidationError({"non_field_errors": [f"Expected a JSON object, got {type(data).__name__}."]})
        if "external_id" in data and data["external_id"] != external_id:
            raise ValidationError({"external_id": ["Does not match the external_id in the URL."]})
        try:
            customer = parse_customer({**data, "external_id": external_id})
        except RecordError as exc:
            raise ValidationError(_record_errors(exc)) from None
        result = customers_upsert(customers=[customer])
        if result.items[0].outcome.is_error:  # an unknown role
            raise ValidationError({result.items[0].field: [result.items[0].message]})
        stored = Customer.objects.get(external_id=external_id)
        created = result.items[0].outcome == Outcome.CREATED
        return Response(
            CustomerOutSerializer(stored).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class CustomerBatchApi(APIView):
    required_scope = Scope.CUSTOMERS_WRITE

    @extend_schema(
        operation_id="customer_batch_upsert",
        tags=["ingestion"],
        summary="Create or update up to 1,000 customers",
        description=(
            "Each item is upserted like `PUT /customers/{external_id}`; later items for the same customer win. "
            "Valid items are stored even when others are rejected: 200 when all were accepted, 207 when some "
            "were rejected (each named in `errors` as `items.<index>.<field>`), 400 when none was."
            + _scope_note(Scope.CUSTOMERS_WRITE)
        ),
        request=CustomerBatchSerializer,
        responses=BATCH_RESPONSES,
    )
    def post(self, request: Request) -> Response:
        return _run_batch(request, parse=parse_customer, write=lambda batch: customers_upsert(customers=batch))


# --- Events -------------------------------------------------------------------------


class EventCreateApi(APIView):
    required_scope = Scope.EVENTS_WRITE

    @extend_schema(
        operation_id="event_create",
        tags=["ingestion"],
        summary="Record one event",
        description=(
            "Idempotent by `event_id`: 201 when stored; replaying the same `event_id` with the same body "
            "stores nothing and answers 200 with the same body; the same `event_id` with a different body "
            "is 409 naming the fields that differ. Monetary types (order, refund, membership_renewed) need "
            "`amount` and `currency`. An unknown `customer_id` is refused (400) unless the server runs with "
            "GROWTH_UNKNOWN_CUSTOMER_EVENTS=create, which creates the customer." + _scope_note(Scope.EVENTS_WRITE)
        ),
        request=EventInSerializer,
        responses={
            200: OpenApiResponse(EventOutSerializer, description="A replay: already stored with this body."),
            201: OpenApiResponse(EventOutSerializer, description="Stored."),
            **COMMON_ERRORS,
            409: OpenApiResponse(
                IngestionErrorSerializer, description="This event_id is stored with a different body."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        try:
            event = parse_event(request.data, event_types=event_type_map())
        except RecordError as exc:
            raise ValidationError(_record_errors(exc)) from None
        result = events_record(events=[event], from_client=True).items[0]
        if result.outcome == Outcome.CONFLICT:
            return Response(
                {"detail": result.message, "errors": {result.field: [result.message]}}, status=status.HTTP_409_CONFLICT
            )
        if result.outcome.is_error:  # unknown customer, or a platform type / reserved id
            raise ValidationError({result.field: [result.message]})
        stored = Event.objects.select_related("customer", "event_type").get(event_id=event.event_id)
        code = status.HTTP_201_CREATED if result.outcome == Outcome.CREATED else status.HTTP_200_OK
        return Response(EventOutSerializer(stored).data, status=code)


class EventBatchApi(APIView):
    required_scope = Scope.EVENTS_WRITE

    @extend_schema(
        operation_id="event_batch_create",
        tags=["ingestion"],
        summary="Record up to 1,000 events",
        description=(
            "Each item follows the rules of `POST /events`. Valid items are stored even when others are "
            "rejected: 200 when all were accepted (new or exact replays, counted in `duplicates`), 207 when some "
            "were rejected (each named in `errors` as `items.<index>.<field>`; a conflicting `event_id` is "
            "rejected on `items.<index>.event_id`), 400 when none was (409 when all were conflicts). "
            "Replaying a whole batch is safe." + _scope_note(Scope.EVENTS_WRITE)
        ),
        request=EventBatchSerializer,
        responses={
            **BATCH_RESPONSES,
            409: OpenApiResponse(BatchResultSerializer, description="Every item conflicts with a stored event."),
        },
    )
    def post(self, request: Request) -> Response:
        event_types = event_type_map()
        return _run_batch(
            request,
            parse=lambda item: parse_event(item, event_types=event_types),
            write=lambda batch: events_record(events=batch, from_client=True),
        )


# --- Memberships --------------------------------------------------------------------


class MembershipUpsertApi(APIView):
    required_scope = Scope.CUSTOMERS_WRITE

    @extend_schema(
        operation_id="membership_upsert",
        tags=["ingestion"],
        summary="Create or update one membership term",
        description=(
            "A term is identified by (customer_id, plan, started_at); sending it again updates its level and "
            "expiry. A renewal is a new term (a new started_at). 201 when created, 200 when updated. The "
            "customer must exist (400 on customer_id otherwise)." + _scope_note(Scope.CUSTOMERS_WRITE)
        ),
        request=MembershipInSerializer,
        responses={
            200: OpenApiResponse(MembershipOutSerializer, description="Updated."),
            201: OpenApiResponse(MembershipOutSerializer, description="Created."),
            **COMMON_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        try:
            membership = parse_membership(request.data)
        except RecordError as exc:
            raise ValidationError(_record_errors(exc)) from None
        result = memberships_upsert(memberships=[membership]).items[0]
        if result.outcome.is_error:
            raise ValidationError({result.field: [result.message]})
        stored = Membership.objects.select_related("customer").get(
            customer__external_id=membership.customer_id, plan=membership.plan, started_at=membership.started_at
        )
        code = status.HTTP_201_CREATED if result.outcome == Outcome.CREATED else status.HTTP_200_OK
        return Response(MembershipOutSerializer(stored).data, status=code)


class MembershipBatchApi(APIView):
    required_scope = Scope.CUSTOMERS_WRITE

    @extend_schema(
        operation_id="membership_batch_upsert",
        tags=["ingestion"],
        summary="Create or update up to 1,000 membership terms",
        description=(
            "Each item follows the rules of `POST /memberships`; 200 / 207 / 400 as for the other batches."
            + _scope_note(Scope.CUSTOMERS_WRITE)
        ),
        request=MembershipBatchSerializer,
        responses=BATCH_RESPONSES,
    )
    def post(self, request: Request) -> Response:
        return _run_batch(request, parse=parse_membership, write=lambda batch: memberships_upsert(memberships=batch))


urlpatterns = [
    # The literal "batch" routes come before the parametrized customer route.
    path("customers/batch", CustomerBatchApi.as_view(), name="customer-batch"),
    path("customers/<str:external_id>", CustomerUpsertApi.as_view(), name="customer-upsert"),
    path("events", EventCreateApi.as_view(), name="event-create"),
    path("events/batch", EventBatchApi.as_view(), name="event-batch"),
    path("memberships", MembershipUpsertApi.as_view(), name="membership-upsert"),
    path("memberships/batch", MembershipBatchApi.as_view(), name="membership-batch"),
]
