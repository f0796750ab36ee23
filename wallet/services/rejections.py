"""Recording a command we cannot do: one `errors` event, at most once per request."""

from __future__ import annotations

from typing import Any

import redis

from wallet.commands import echo_request
from wallet.errors import IDEMPOTENCY_CONFLICT, InvalidCommand
from wallet.events import CommandRejected, command_rejected_event
from wallet.outbox import Outbox
from wallet.state.keyspace import Keyspace
from wallet.state.requests import Marker, RequestMarkers


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
    markers = RequestMarkers(client, keyspace)
    conflict = error.code == IDEMPOTENCY_CONFLICT and markers.holds_outcome(request_id)

    def write(pipe: redis.client.Pipeline, marker: Marker | None) -> bool:
        if marker is not None:
            return False
        pipe.multi()
        outbox.append(pipe, event)
        markers.mark_rejected_in(pipe, request_id, error.code, conflict=conflict)
        return True

    return markers.once(request_id, write, conflict=conflict)
