"""Versioned event envelope and topic names: the contract with the rest of the platform."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

TOPIC_COMMAND = "command"
TOPIC_ADDRESS_CREATED = "address.created"
TOPIC_TRANSACTION = "transaction"
TOPIC_ERRORS = "errors"
ALL_TOPICS = (TOPIC_COMMAND, TOPIC_ADDRESS_CREATED, TOPIC_TRANSACTION, TOPIC_ERRORS)

EVENT_ADDRESS_CREATED = "address.created"
EVENT_COMMAND_REJECTED = "command.rejected"
EVENT_CHAIN_UNAVAILABLE = "chain.unavailable"
EVENT_CHAIN_RECOVERED = "chain.recovered"
# The node lacks something the scanner would use (e.g. a tracer): what is not seen, said once.
EVENT_CHAIN_DEGRADED = "chain.degraded"
# The node serves another chain than configured: nothing is scanned or sent there.
EVENT_CHAIN_MISMATCH = "chain.mismatch"
# A height the node cannot serve for a non-transient reason: the watermark waits at it.
EVENT_BLOCK_UNREADABLE = "block.unreadable"
# The endpoint in use changed (the previous one was down, erroring or behind).
EVENT_ENDPOINT_SWITCHED = "chain.endpoint_switched"

# Fixed namespace: the same fact always gets the same event_id, on any host, after any retry.
_EVENT_NAMESPACE = uuid.UUID("6f1c2a9e-3b0d-4c55-9a43-2f1e8d7b5c10")


def event_id_for(chain_id: int, event_type: str, *identity: str | int) -> str:
    """Deterministic id of one fact, so consumers can drop the repeats at-least-once delivery makes."""
    name = "/".join([str(chain_id), event_type, *(str(part) for part in identity)])
    return str(uuid.uuid5(_EVENT_NAMESPACE, name))


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str
    type: str
    schema_version: int = SCHEMA_VERSION
    chain_id: int
    occurred_at: datetime
    payload: dict[str, Any]
    meta: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> bytes:
        try:
            return orjson.dumps(self.model_dump(mode="json"))
        except TypeError:
            # An integer past 64 bits (a caller's `meta` may hold one): echoed exactly, never as a float.
            return self.model_dump_json().encode()


class AddressCreated(BaseModel):
    address: str  # EIP-55 checksummed
    request_id: str
    index_in_request: int
    count_in_request: int


class CommandRejected(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    # The request as received (possibly truncated), so the caller can match the reply.
    request: dict[str, Any]


class OutgoingEvent(BaseModel):
    """An envelope with where it goes: what the outbox stores and the bridge forwards."""

    model_config = ConfigDict(frozen=True)

    topic: str  # logical topic name, before any deployment prefix
    key: str | None
    envelope: Envelope


def address_created_event(
    chain_id: int, address: str, request_id: str, index: int, count: int, meta: dict[str, Any]
) -> OutgoingEvent:
    payload = AddressCreated(
        address=address, request_id=request_id, index_in_request=index, count_in_request=count
    )
    envelope = Envelope(
        event_id=event_id_for(chain_id, EVENT_ADDRESS_CREATED, address.lower()),
        type=EVENT_ADDRESS_CREATED,
        chain_id=chain_id,
        occurred_at=utc_now(),
        payload=payload.model_dump(),
        meta=meta,
    )
    return OutgoingEvent(topic=TOPIC_ADDRESS_CREATED, key=address.lower(), envelope=envelope)


def command_rejected_event(
    chain_id: int, request_id: str, rejection: CommandRejected, meta: dict[str, Any]
) -> OutgoingEvent:
    envelope = Envelope(
        event_id=event_id_for(chain_id, EVENT_COMMAND_REJECTED, request_id),
        type=EVENT_COMMAND_REJECTED,
        chain_id=chain_id,
        occurred_at=utc_now(),
        payload=rejection.model_dump(),
        meta=meta,
    )
    return OutgoingEvent(topic=TOPIC_ERRORS, key=request_id, envelope=envelope)


def chain_notice_event(chain_id: int, event_type: str, identity: tuple[str | int, ...],
                       payload: dict[str, Any]) -> OutgoingEvent:
    """An event about the chain or the node on `errors`, keyed `chain:<id>` so they stay in order."""
    envelope = Envelope(
        event_id=event_id_for(chain_id, event_type, *identity),
        type=event_type, chain_id=chain_id, occurred_at=utc_now(), payload=payload,
    )
    return OutgoingEvent(topic=TOPIC_ERRORS, key=f"chain:{chain_id}", envelope=envelope)
