"""The one error the analytics raise on bad input; the API turns it into a 400 naming the field."""

from __future__ import annotations


class AnalyticsInputError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
