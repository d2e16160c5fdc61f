from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from access.roles import GROWTH, MARKETER

# Local demo only: the demo serves on loopback and prints these.
DEMO_USERS = {
    "growth": ("growth-demo-pass", GROWTH),
    "marketer": ("marketer-demo-pass", MARKETER),
}


class Command(BaseCommand):
    help = "Create (or reset) the demo's growth and marketer users. Idempotent."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        for username, (password, group) in DEMO_USERS.items():
            user, _ = User.objects.get_or_create(username=username, defaults={"is_staff": True})
            user.is_staff = True
            user.set_password(password)
            user.save()
            user.groups.set([Group.objects.get(name=group)])
            self.stdout.write(f"{username} / {password} ({group})")
