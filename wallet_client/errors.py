"""Named errors of the client, each with a stable `code` (the wallet's own codes where it has one)."""

from __future__ import annotations

from typing import Any


class WalletClientError(Exception):
    code: str = "wallet_client_error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class InvalidRequest(WalletClientError):
    """Refused before sending: the wallet would refuse it for the same reason (same code)."""

    code = "invalid_fields"


class RequestRejected(WalletClientError):
    """The wallet refused the request: its `command.rejected` event, or the Celery task's error."""

    code = "rejected"


class ReplyTimeout(WalletClientError):
    """The reply did not (fully) come in time; `events` holds what did."""

    code = "reply_timeout"

    def __init__(self, message: str, *, events: list[Any] | None = None) -> None:
        super().__init__(message)
        self.events = events or []


class TransportError(WalletClientError):
    """Kafka or the Celery broker did not take the request."""

    code = "transport_unavailable"
