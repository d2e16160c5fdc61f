"""A Django email backend that stores messages in the database (``MailboxMessage``) so the
demo shows them in the admin. Enable with::

    EMAIL_BACKEND=campaigns.mailbox.DatabaseMailboxBackend

A message resent with the same delivery key (after a crash) is stored once.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend


class DatabaseMailboxBackend(BaseEmailBackend):
    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        from campaigns.models import MailboxMessage

        count = 0
        for message in email_messages:
            html = ""
            for content, mimetype in getattr(message, "alternatives", []) or []:
                if mimetype == "text/html":
                    html = str(content)
            key = str(message.extra_headers.get("X-Delivery-Key", ""))
            values = {
                "channel": "email",
                "from_email": message.from_email or "",
                "to": ", ".join(message.recipients()),
                "subject": message.subject,
                "body_text": str(message.body),
                "body_html": html,
                "headers": {k: str(v) for k, v in message.extra_headers.items()},
            }
            if key:
                MailboxMessage.objects.get_or_create(delivery_key=key, channel="email", defaults=values)
            else:
                MailboxMessage.objects.create(**values)
            count += 1
        return count
