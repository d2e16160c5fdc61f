"""Pluggable channel backends: email (Django's email framework), SMS and push (HTTP provider
adapters), in-app (read through the offer API). See ``campaigns.channels.base``."""

from campaigns.channels.base import (
    ChannelBackend,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TransientError,
    get_backend,
)

__all__ = ["ChannelBackend", "OutgoingMessage", "PermanentError", "SendResult", "TransientError", "get_backend"]
