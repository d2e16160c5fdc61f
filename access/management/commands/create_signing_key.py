from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.models import CLIENT_SCOPES, SigningAlgorithm
from access.services import signing_key_create


class Command(BaseCommand):
    help = (
        "Create a customer-token signing key (as in the admin) and print its kid; for HS256 also the "
        "secret, once. RS256/ES256 take the PEM public key from --public-key-file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--algorithm", required=True, choices=SigningAlgorithm.values)
        parser.add_argument("--public-key-file", type=Path, help="PEM public key (RS256/ES256).")
        parser.add_argument("--audience", default="", help="Require this `aud` in tokens.")
        parser.add_argument(
            "--scope", action="append", dest="scopes", choices=[s.value for s in CLIENT_SCOPES], help="Default: all."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path | None = options["public_key_file"]
        try:
            key, secret = signing_key_create(
                name=options["name"],
                algorithm=options["algorithm"],
                public_key=path.read_text() if path else "",
                audience=options["audience"],
                scopes=options["scopes"] or CLIENT_SCOPES,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        self.stdout.write(f"kid={key.kid}")
        if secret:
            self.stdout.write(f"secret={secret}")
