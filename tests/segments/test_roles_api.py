"""Customer roles through the ingestion API (the one door: ``customers_upsert``)."""

from __future__ import annotations

import math

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from segments.models import Customer, CustomerRole, Role
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def customers_client(api_client_factory) -> APIClient:  # type: ignore[no-untyped-def]
    return api_client_factory("customers:write")


def roles_of(external_id: str) -> set[str]:
    return set(CustomerRole.objects.filter(customer__external_id=external_id).values_list("role__key", flat=True))


def test_customer_put__roles__stored_and_returned(customers_client: APIClient) -> None:
    response = customers_client.put("/api/v1/customers/c-1", {"roles": ["seller", "buyer"]}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["roles"] == ["buyer", "seller"]
    assert roles_of("c-1") == {"buyer", "seller"}


def test_customer_put__roles_replaced__missing_removed_kept_ones_keep_since(customers_client: APIClient) -> None:
    customers_client.put("/api/v1/customers/c-1", {"roles": ["buyer", "seller"]}, format="json")
    since = CustomerRole.objects.get(role__key="buyer").since
    response = customers_client.put("/api/v1/customers/c-1", {"roles": ["buyer"]}, format="json")
    assert response.status_code == 200
    assert roles_of("c-1") == {"buyer"}
    assert CustomerRole.objects.get(role__key="buyer").since == since


def test_customer_put__roles_absent_or_null__kept_or_cleared(customers_client: APIClient) -> None:
    customers_client.put("/api/v1/customers/c-1", {"roles": ["buyer"]}, format="json")
    customers_client.put("/api/v1/customers/c-1", {"locale": "fr"}, format="json")
    assert roles_of("c-1") == {"buyer"}
    customers_client.put("/api/v1/customers/c-1", {"roles": None}, format="json")
    assert roles_of("c-1") == set()


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        (["buyer", "landlord"], "Unknown role 'landlord'; known roles: buyer, seller."),
        ("buyer", "A list of role keys"),
        (["Buyer!"], "is not a role key"),
        ([f"r{i}" for i in range(11)], "At most 10 roles."),
    ],
)
def test_customer_put__bad_roles__400_naming_roles_nothing_written(
    customers_client: APIClient, roles: object, message: str
) -> None:
    response = customers_client.put("/api/v1/customers/c-1", {"roles": roles, "locale": "fr"}, format="json")
    assert response.status_code == 400, response.json()
    assert message in response.json()["errors"]["roles"][0]
    assert not Customer.objects.exists()


def test_customer_batch__unknown_role_in_one_item__207_others_stored(customers_client: APIClient) -> None:
    items = [
        {"external_id": "c-1", "roles": ["seller"]},
        {"external_id": "c-2", "roles": ["wizard"]},
    ]
    response = customers_client.post("/api/v1/customers/batch", {"items": items}, format="json")
    assert response.status_code == 207, response.json()
    assert list(response.json()["errors"]) == ["items.1.roles"]
    assert roles_of("c-1") == {"seller"}
    assert not Customer.objects.filter(external_id="c-2").exists()


def test_customer_batch__roles_for_500_customers__bounded_statements(customers_client: APIClient) -> None:
    Role.objects.create(key="host", name="Host")
    for i in range(5):
        CustomerFactory(external_id=f"c-{i}")
    items = [{"external_id": f"c-{i}", "roles": ["buyer", "host"] if i % 2 else ["seller"]} for i in range(500)]
    with CaptureQueriesContext(connection) as queries:
        response = customers_client.post("/api/v1/customers/batch", {"items": items}, format="json")
    assert response.status_code == 200, response.json()
    assert CustomerRole.objects.count() == 250 * 2 + 250
    role_statements = [q["sql"][:60] for q in queries if "segments_customerrole" in q["sql"]]
    inserts = [sql for sql in role_statements if sql.startswith("INSERT")]
    fields = [f for f in CustomerRole._meta.concrete_fields if not f.primary_key]
    # One read and no delete (nothing to remove) for the chunk; inserts as the backend's
    # parameter limit splits 750 rows: nothing per customer.
    assert len(role_statements) - len(inserts) == 1, role_statements
    assert len(inserts) <= math.ceil(750 / connection.ops.bulk_batch_size(fields, [None] * 750)), role_statements


def test_import_customers__csv_roles_column__comma_separated_set_empty_cell_keeps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io as _io

    from django.core.management import CommandError, call_command

    path = tmp_path / "customers.csv"
    path.write_text('external_id,roles\nc-1,"buyer, seller"\nc-2,landlord\nc-3,\n')
    err = _io.StringIO()
    with pytest.raises(CommandError):  # exit status 2: one line rejected
        call_command("import_customers", str(path), "--no-progress", stdout=_io.StringIO(), stderr=err)
    assert "line 3: roles: Unknown role 'landlord'" in err.getvalue()
    assert roles_of("c-1") == {"buyer", "seller"}
    path.write_text("external_id,roles\nc-1,\n")
    call_command("import_customers", str(path), "--no-progress", stdout=_io.StringIO(), stderr=_io.StringIO())
    assert roles_of("c-1") == {"buyer", "seller"}


def test_dimension_admin__growth_adds_a_seller_value_pyramid__layers_created_and_scoped(client, db: None) -> None:  # type: ignore[no-untyped-def]
    import json

    from segments.dimensions.value_rank import default_config
    from segments.models import Dimension
    from tests.factories import UserFactory

    client.force_login(UserFactory(groups=["growth"]))
    seller = Role.objects.get(key="seller")
    response = client.post(
        "/admin/segments/dimension/add/",
        {
            "key": "seller_pyramid",
            "name": "Seller pyramid",
            "kind": "value_rank",
            "role": seller.pk,
            "config": json.dumps(default_config()),
            "is_active": "on",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    dimension = Dimension.objects.get(key="seller_pyramid")
    assert dimension.role == seller
    assert list(dimension.layers.values_list("key", flat=True)) == ["top_1", "top_10", "top_30", "rest", "no_value"]
    assert "Seller pyramid" in client.get(f"/admin/segments/dimension/?role__id__exact={seller.pk}").content.decode()
