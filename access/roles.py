"""The two roles of the product and what each may do in the admin.

- ``growth`` configures everything: segments, dimensions, experiments, campaigns.
- ``marketer`` reads: every view permission plus reading reports; changes nothing.

Groups are created by a migration; their permissions are synced after every
``migrate`` (permissions of new models only exist once their app has migrated).
"""

from __future__ import annotations

from typing import Any

GROWTH = "growth"
MARKETER = "marketer"

DOMAIN_APPS = ("segments", "experiments", "campaigns")
# Custom permissions (Meta.permissions) that reading roles also get.
READ_ONLY_CODENAMES = ("view_report",)


def is_growth_permission(app_label: str, codename: str) -> bool:
    return app_label in DOMAIN_APPS or (app_label == "django_celery_beat" and codename.startswith("view_"))


def is_marketer_permission(app_label: str, codename: str) -> bool:
    return app_label in DOMAIN_APPS and (codename.startswith("view_") or codename in READ_ONLY_CODENAMES)


def sync_role_permissions(**_: Any) -> None:
    from django.contrib.auth.models import Group, Permission

    perms = list(Permission.objects.select_related("content_type"))
    for name, rule in ((GROWTH, is_growth_permission), (MARKETER, is_marketer_permission)):
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set([p for p in perms if rule(p.content_type.app_label, p.codename)])
