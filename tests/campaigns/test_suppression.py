"""Suppressions: normalized contact points, CSV import (errors with line numbers, nothing
half-applied) and export, the admin pages; and the unsubscribe headers written by the
direct email builder byte for byte as Django writes them."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from campaigns.channels import OutgoingMessage
from campaigns.channels.email import EmailBackend, direct_message_bytes, message_bytes
from campaigns.models import Suppression
from campaigns.services import consent, suppression


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_suppressions_import__bad_lines__reported_by_line_number_nothing_imported() -> None:
    text = (
        "channel,address,reason,detail\n"
        "email,Ann@Example.com,hard_bounce,550 no such user\n"
        "email,not-an-address,complaint,\n"
        "sms,+33612345678,invalid,\n"
        "fax,123,manual,\n"
        "sms,0612345678,invalid,\n"
        "email,bob@example.com,bounced,\n"
    )
    result = suppression.suppressions_import(text=text)
    assert result.added == 0
    assert [line for line, _ in result.errors] == [3, 5, 6, 7]
    assert result.errors[0][1].startswith("address:") and result.errors[1][1].startswith("channel:")
    assert result.errors[3][1].startswith("reason:")
    assert not Suppression.objects.exists()


@pytest.mark.django_db
def test_suppressions_import_export__valid_file__normalized_deduplicated_and_round_trips() -> None:
    text = (
        "channel,address,reason\n"
        "email,Ann@Example.com ,hard_bounce\n"
        "email,ann@example.com,complaint\n"
        "sms,+33612345678,invalid\n"
    )
    assert suppression.suppressions_import(text=text).added == 2
    assert dict(Suppression.objects.values_list("address", "reason")) == {
        "ann@example.com": "hard_bounce",  # the first reason is kept
        "+33612345678": "invalid",
    }
    exported = suppression.suppressions_export()
    assert exported.splitlines()[0] == "channel,address,reason,detail,created_at"
    Suppression.objects.all().delete()
    assert suppression.suppressions_import(text=exported).added == 2


@pytest.mark.django_db
def test_suppression_admin__import_with_errors_then_export(growth_user, marketer_user) -> None:  # type: ignore[no-untyped-def]
    client = _client(growth_user)
    bad = SimpleUploadedFile("s.csv", b"channel,address,reason\nemail,nope,complaint\n", content_type="text/csv")
    response = client.post(reverse("admin:campaigns_suppression_import"), {"file": bad})
    assert response.status_code == 200 and "Line 2: address:" in response.content.decode()
    good = SimpleUploadedFile("s.csv", b"channel,address,reason\nemail,a@example.com,complaint\n")
    response = client.post(reverse("admin:campaigns_suppression_import"), {"file": good})
    assert response.status_code == 302 and Suppression.objects.get().address == "a@example.com"
    export = client.get(reverse("admin:campaigns_suppression_export"))
    assert export.status_code == 200 and b"email,a@example.com,complaint" in export.content
    changelist = client.get(reverse("admin:campaigns_suppression_changelist")).content.decode()
    assert "Import CSV" in changelist and "a@example.com" in changelist
    assert _client(marketer_user).get(reverse("admin:campaigns_suppression_import")).status_code == 403


@pytest.mark.pure
@pytest.mark.parametrize("mailto", ["", "unsubscribe@growth.example.com"])
def test_direct_message_bytes__unsubscribe_headers__identical_to_django(settings, mailto: str) -> None:  # type: ignore[no-untyped-def]
    settings.DEFAULT_FROM_EMAIL = "growth@example.com"
    backend = EmailBackend()
    rng = random.Random(5)
    date = re.compile(rb"^Date: .*\r$", re.MULTILINE)
    boundary = re.compile(rb"={15}\d+==")
    for i in range(300):
        site = "https://" + "x" * rng.randint(1, 90) + rng.choice([".com", ".io:8443", "/a;b,c"])
        url = consent.unsubscribe_url(customer_id=rng.randint(1, 10**9), channel="email", site_url=site)
        message = OutgoingMessage(
            key=f"d1-{i}",
            channel="email",
            to=f"c{i}@example.com",
            subject="Hello",
            text=f"Hi\n{url}",
            html="" if i % 2 else f'<a href="{url}">x</a>',
            headers=(*consent.email_headers(url=url, mailto=mailto), ("X-Extra", "a" + " bc" * rng.randint(0, 40))),
        )
        ours = direct_message_bytes(
            subject=message.subject,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=message.to,
            message_id=backend.message_id(message),
            key=message.key,
            text=message.text,
            html=message.html,
            headers=message.headers,
        )
        assert ours is not None  # the common shape stays on the fast path
        reference = message_bytes(backend.email(message))

        def normalize(b: bytes) -> bytes:
            return boundary.sub(b"B", date.sub(b"Date: D\r", b))

        assert normalize(ours) == normalize(reference)
        assert all(len(line) <= 998 for line in ours.split(b"\r\n"))


@pytest.mark.pure
@pytest.mark.parametrize(
    ("command", "code", "text", "bounce"),
    [
        ("RCPT", 550, b"5.1.1 no such user", True),
        ("DATA", 554, b"5.5.1 no valid recipients", True),
        ("END", 554, b"5.7.1 message refused", True),
        ("RCPT", 503, b"5.5.1 nested MAIL command", False),  # our sequencing, not the recipient
        ("MAIL", 550, b"5.7.1 sender refused", False),  # the sender, the same for every message
        ("RCPT", 450, b"4.2.0 greylisted", False),
    ],
)
def test_is_hard_bounce__smtp_client_refusal__by_the_command_it_answered(
    command: str, code: int, text: bytes, bounce: bool
) -> None:
    from campaigns.channels.smtp import reply_error

    error = reply_error(command, code, text)  # what the batch loop yields for that reply
    assert (error.smtp_code, error.smtp_command) == (code, command)
    assert suppression.is_hard_bounce(code=error.smtp_code, command=error.smtp_command) is bounce
