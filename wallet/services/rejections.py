"""Recording a command we cannot do: one `errors` event, at most once per request."""

from __future__ import annotations

from typing import Any

import redis

from wallet.commands import echo_request
from wallet.errors import InvalidCommand
from wallet.events import CommandRejected, command_rejected_event
from wallet.outbox import Outbox
from wallet.services.accounts import REQUEST_MEMORY_SECONDS
from wallet.state.keyspace import Keyspace


def reject_command(client: redis.Redis, keyspace: Keyspace, outbox: Outbox, chain_id: int, *,
                   request_id: str, error: InvalidCommand, request: dict[str, Any] | bytes,
                   meta: dict[str, Any], source: dict[str, Any] | None = None) -> bool:
    """Append a `command.rejected` event unless this request was already answered.

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

    def write(pipe: redis.client.Pipeline) -> bool:
        if pipe.exists(request_key):
            return False
        pipe.multi()
        outbox.append(pipe, event)
        pipe.set(request_key, b'{"rejected": "' + error.code.encode() + b'"}', ex=REQUEST_MEMORY_SECONDS)
        return True

    return client.transaction(write, request_key, value_from_callable=True)
