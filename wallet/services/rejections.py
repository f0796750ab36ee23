"""Recording a command we cannot do: one `errors` event, at most once per request."""

from __future__ import annotations

from typing import Any

import redis

from wallet.commands import echo_request
from wallet.errors import IDEMPOTENCY_CONFLICT, InvalidCommand
from wallet.events import CommandRejected, command_rejected_event
from wallet.outbox import Outbox
from wallet.state.keyspace import REQUEST_MEMORY_SECONDS, Keyspace

# How a request's key starts when the request was rejected: `{"rejected": "<code>"}`.
REJECTED_MARKER = b'{"rejected":'


def reject_command(client: redis.Redis, keyspace: Keyspace, outbox: Outbox, chain_id: int, *,
                   request_id: str, error: InvalidCommand, request: dict[str, Any] | bytes,
                   meta: dict[str, Any], source: dict[str, Any] | None = None) -> bool:
    """Append a `command.rejected` event unless this request was already answered.

    An idempotency conflict on a request id that was done is reported once too, under its own
    marker: the request's key holds the first request's outcome, which stays as it is.

    Returns True when the event was written now.
    """
    echoed = echo_request(request) if isinstance(request, bytes) else dict(request)
    if source:
        echoed["source"] = source
    event = command_rejected_event(
        chain_id,
        request_id,
        CommandRejected(code=error.code, message=error.message, details=error.details, request=echoed),
        meta,
    )
    request_key = keyspace.request(request_id)
    if error.code == IDEMPOTENCY_CONFLICT and _holds_outcome(client.get(request_key)):
        request_key = keyspace.request_conflict(request_id)

    def write(pipe: redis.client.Pipeline) -> bool:
        if pipe.exists(request_key):
            return False
        pipe.multi()
        outbox.append(pipe, event)
        pipe.set(request_key, REJECTED_MARKER + b' "' + error.code.encode() + b'"}', ex=REQUEST_MEMORY_SECONDS)
        return True

    return client.transaction(write, request_key, value_from_callable=True)


def _holds_outcome(marker: bytes | None) -> bool:
    """Whether a request's key holds what the request did (not that it was rejected)."""
    return marker is not None and not marker.startswith(REJECTED_MARKER)
