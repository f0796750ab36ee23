"""Typed replies: the event envelope, the known payloads, and a request's reply."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wallet_client.errors import RequestRejected


class Event(BaseModel):
    """One event as the wallet writes it (schemas/events/*.json has every payload)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event_id: str  # the same fact always has the same id: drop repeats (delivery is at-least-once)
    type: str
    schema_version: int
    chain_id: int
    occurred_at: str
    payload: dict[str, Any]
    meta: dict[str, Any] = Field(default_factory=dict)
    # Where it was read (not part of the event).
    topic: str = ""
    key: str | None = None


class Rejection(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    request: dict[str, Any] = Field(default_factory=dict)

    def error(self) -> RequestRejected:
        return RequestRejected(self.message, code=self.code, details=self.details)


class Reply(BaseModel):
    """The events that answered one request, in the order read, or its rejection."""

    request_id: str
    events: list[Event] = Field(default_factory=list)
    rejection: Rejection | None = None
    complete: bool = False  # every expected event came (or the rejection did)

    def raise_for_rejection(self) -> Reply:
        if self.rejection is not None:
            raise self.rejection.error()
        return self

    @property
    def last(self) -> Event | None:
        return self.events[-1] if self.events else None

    @property
    def addresses(self) -> list[str]:
        """`create_account`: the new addresses (EIP-55), in request order."""
        created = sorted((e for e in self.events if e.type == "address.created"),
                         key=lambda e: e.payload.get("index_in_request", 0))
        return [e.payload["address"] for e in created]


class AccountsCreated(BaseModel):
    """The result of the `create_account` task (through Celery)."""

    request_id: str
    addresses: list[str]
    created: bool  # False: this request id was done before, these are its addresses


class SendResult(BaseModel):
    """The result of a money-moving task (through Celery): `status` is submitted or held."""

    model_config = ConfigDict(extra="allow")

    status: str
    request_id: str | None = None
    tx_hash: str | None = None
