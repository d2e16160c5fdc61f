"""In-app messages are not pushed anywhere: the offer API renders them when the customer's
app asks, so a delivery on this channel is recorded as sent when it is decided."""

from __future__ import annotations

from campaigns.channels.base import ChannelBackend, OutgoingMessage, SendResult


class InAppBackend(ChannelBackend):
    channel = "in_app"

    def send(self, message: OutgoingMessage) -> SendResult:
        return SendResult(provider_ref="in_app")
