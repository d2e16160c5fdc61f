from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from access.models import Scope
from access.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print it once. Scopes: " + ", ".join(Scope.values)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--scope", action="append", dest="scopes", choices=Scope.values, required=True)

    def handle(self, *args: Any, name: str, scopes: list[str], **options: Any) -> None:
        _, raw = api_key_create(name=name, scopes=scopes)
        self.stdout.write(raw)
