"""Admin › Roles: each role with the number of customers holding it (two-sided platforms)."""

from __future__ import annotations

import pytest
from django.test import Client

from segments.models import CustomerRole, Role
from tests.factories import CustomerFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_role_changelist__holders__counted_per_role() -> None:
    # Given three customers who buy, one of whom also sells
    buyer, seller = Role.objects.get(key="buyer"), Role.objects.get(key="seller")
    customers = [CustomerFactory() for _ in range(3)]
    CustomerRole.objects.bulk_create([CustomerRole(customer=c, role=buyer) for c in customers])
    CustomerRole.objects.create(customer=customers[0], role=seller)
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    # When
    html = client.get("/admin/segments/role/").content.decode()
    # Then
    assert "Customers holding it" in html
    assert '<td class="field-holders">3</td>' in html and '<td class="field-holders">1</td>' in html
