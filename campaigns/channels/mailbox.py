"""The demo's SMS and push backends: messages land in the database mailbox shown in the
admin instead of a provider. Enable with CAMPAIGNS_SMS_BACKEND=campaigns.channels.mailbox.SmsMailboxBackend
and CAMPAIGNS_PUSH_BACKEND=campaigns.channels.mailbox.PushMailboxBackend."""

from __future__ import annotations

from campaigns.channels.base import ChannelBackend, OutgoingMessage, SendResult
from campaigns.models import MailboxMessage


class _MailboxBackend(ChannelBackend):
    def send(self, message: OutgoingMessage) -> SendResult:
        row, _ = MailboxMessage.objects.get_or_create(
            delivery_key=message.key,
            channel=self.channel,
            defaults={"to": message.to, "subject": message.title, "body_text": message.text},
        )
        return SendResult(provider_ref=f"mailbox:{row.pk}")


class SmsMailboxBackend(_MailboxBackend):
    channel = "sms"


class PushMailboxBackend(_MailboxBackend):
    channel = "push"
