"""The outbox: events appended in the same atomic write as the state they describe.

A Redis stream. Writers append inside their MULTI/EXEC; the bridge reads in order, forwards, and
deletes only what the broker acknowledged. Anything that dies in between leaves the entry in place,
so it is sent again: at-least-once, with a deterministic event_id for consumers to drop repeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from wallet.events import OutgoingEvent
from wallet.metrics import EVENTS, field_of

# Start of the stream; also where the bridge restarts after a failed publish.
STREAM_START = "0-0"

# An entry's fields, in this order wherever an entry is written (block staging keeps the values as
# a flat list, and its Lua script is handed these names for the XADD).
ENTRY_FIELDS = ("topic", "key", "event_id", "value")


def entry_values(event: OutgoingEvent) -> tuple[str, str, str, bytes]:
    return event.topic, event.key or "", event.envelope.event_id, event.envelope.to_json()


@dataclass(frozen=True)
class OutboxEntry:
    entry_id: str
    topic: str
    key: str | None
    event_id: str
    value: bytes


class Outbox:
    def __init__(self, client: redis.Redis, stream_key: str, event_counts: str | None = None) -> None:
        self._redis = client
        self._stream = stream_key
        # Metrics: a HASH counting appended events by type, in the same transaction (exact counts).
        self._event_counts = event_counts

    def append(self, pipe: redis.client.Pipeline, event: OutgoingEvent) -> None:
        """Queue the event on `pipe`: it is written if and only if the caller's transaction is."""
        pipe.xadd(self._stream, dict(zip(ENTRY_FIELDS, entry_values(event), strict=True)))
        if self._event_counts is not None:
            pipe.hincrby(self._event_counts, field_of(EVENTS, {"type": event.envelope.type}), 1)

    def read_after(self, cursor: str, count: int, block_ms: int | None = None) -> list[OutboxEntry]:
        """Up to `count` entries after `cursor`, in append order; waits up to `block_ms` for new ones."""
        reply = self._redis.xread({self._stream: cursor}, count=count, block=block_ms)
        if not reply:
            return []
        _stream, messages = reply[0]
        return [_entry(entry_id, fields) for entry_id, fields in messages]

    def remove(self, entry_ids: list[str]) -> int:
        return int(self._redis.xdel(self._stream, *entry_ids)) if entry_ids else 0

    def __len__(self) -> int:
        return int(self._redis.xlen(self._stream))

    def entries(self, count: int = 10_000) -> list[OutboxEntry]:
        return [_entry(i, f) for i, f in self._redis.xrange(self._stream, count=count)]


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> OutboxEntry:
    def text(name: bytes) -> str:
        return fields[name].decode()

    return OutboxEntry(
        entry_id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        topic=text(b"topic"),
        key=text(b"key") or None,
        event_id=text(b"event_id"),
        value=fields[b"value"],
    )
