from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

pytestmark = pytest.mark.django_db


def test_groups__created_by_migration__growth_and_marketer_exist() -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= {"growth", "marketer"}


def test_marketer__permissions__only_view_and_reports(marketer_user) -> None:  # type: ignore[no-untyped-def]
    perms = marketer_user.get_all_permissions()
    assert "segments.view_segment" in perms
    assert "experiments.view_report" in perms
    changing = [p for p in perms if p.split(".")[1].split("_")[0] in {"add", "change", "delete"}]
    assert changing == []


def test_growth__permissions__configure_segments_and_experiments(growth_user) -> None:  # type: ignore[no-untyped-def]
    assert growth_user.has_perms(
        ["segments.add_segment", "segments.change_dimension", "experiments.add_experiment", "experiments.view_report"]
    )
    assert not growth_user.has_perm("access.add_apikey")


def test_marketer__admin_change_form__refused(client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)
    assert client.get("/admin/segments/segment/add/").status_code == 403
    assert client.post("/admin/segments/segment/add/", {"key": "x", "name": "x", "rule": "{}"}).status_code == 403


def test_admin_index__marketer__links_to_reports_playbook_and_planner(client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(marketer_user)
    html = client.get("/admin/").content.decode()
    for url in ("/admin/reports/", "/admin/playbook/", "/admin/reports/planner/"):
        assert f'href="{url}"' in html


def test_admin_index__staff_without_report_permission__no_insights(client) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import UserFactory

    client.force_login(UserFactory())
    assert "Lift reports" not in client.get("/admin/").content.decode()
