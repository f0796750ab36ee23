"""Which events answer a request, and when its answer is complete: shared by both transports."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from wallet_client.models import Event, Rejection, Reply
from wallet_client.registry import EVENT_COMMAND_REJECTED, Command

# Stages after which an outgoing request has its first answer: on its way, waiting for an approver,
# or failed. (`confirmed` comes K blocks later: pass `until` to wait for it.)
FIRST_ANSWER_STAGES = ("submitted", "held", "failed")
Until = Callable[[list[Event]], bool]


def is_rejection_of(event: Event, request_id: str) -> bool:
    """A `command.rejected` for this request: keyed by its id, or echoing it (a command that could
    not be parsed is keyed by its Kafka position, but its echo holds the id the caller wrote)."""
    if event.type != EVENT_COMMAND_REJECTED:
        return False
    request = event.payload.get("request")
    if not isinstance(request, dict):
        return False
    if event.key == request_id or request.get("request_id") == request_id:
        return True
    raw = request.get("raw")
    return isinstance(raw, str) and f'"request_id": {json.dumps(request_id)}' in raw


def _answers(spec: Command, event_type: str) -> bool:
    for reply in spec.replies:
        if reply == event_type or (reply.startswith("<kind>.") and event_type.endswith(reply[6:])):
            return True
    return False


def is_reply_to(event: Event, request_id: str, spec: Command) -> bool:
    return _answers(spec, event.type) and event.payload.get("request_id") == request_id


def default_until(spec: Command, count: int) -> Until:
    if spec.type == "create_account":
        return lambda events: sum(e.type == "address.created" for e in events) >= count
    if spec.moves_money:
        return lambda events: any(
            (e.type.rpartition(".")[2] in FIRST_ANSWER_STAGES and e.type != "authorization.decided")
            or (e.type == "authorization.decided" and e.payload.get("outcome") == "rejected") for e in events)
    return lambda events: len(events) >= 1


class ReplyCollector:
    """Feeds events in; says when the reply is complete."""

    def __init__(self, request_id: str, spec: Command, count: int = 1, until: Until | None = None) -> None:
        self.reply = Reply(request_id=request_id)
        self._spec = spec
        self._until = until or default_until(spec, count)

    def add(self, event: Event) -> bool:
        """True once the reply is complete."""
        if is_rejection_of(event, self.reply.request_id):
            self.reply.rejection = Rejection.model_validate(event.payload)
            self.reply.complete = True
        elif is_reply_to(event, self.reply.request_id, self._spec):
            self.reply.events.append(event)
            self.reply.complete = self._until(self.reply.events)
        return self.reply.complete


def parse_event(value: bytes | None, topic: str, key: bytes | None) -> Event | None:
    """An event, or None for anything else on the topic (not JSON, not an envelope)."""
    try:
        data: Any = json.loads(value or b"")
        if not isinstance(data, dict):
            return None
        return Event.model_validate({**data, "topic": topic, "key": key.decode() if key else None})
    except ValueError:  # not JSON, or pydantic's ValidationError (a ValueError)
        return None
