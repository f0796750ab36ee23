"""Records of outgoing requests in Redis, each change written with its events in one MULTI/EXEC.

A record is created together with its nonce claim and its place in the in-flight set; after that
every change is a read-modify-write under WATCH (the keys worker and the tracker may touch the same
record), and the nonce claim follows the record: held while in flight, released when done.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from wallet.events import OutgoingEvent
from wallet.outbox import Outbox
from wallet.sending.model import SendRecord
from wallet.state.keyspace import REQUEST_MEMORY_SECONDS, Keyspace

# What a mutation returns: the new record and its events, or None for "nothing to change".
Change = tuple[SendRecord, list[OutgoingEvent]] | None


class NonceTaken(Exception):
    """Another request holds the nonce this record was signed with (found in the write)."""


class SendStore:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, outbox: Outbox) -> None:
        self._redis = client
        self._ks = keyspace
        self._outbox = outbox

    def load(self, request_id: str) -> SendRecord | None:
        data = self._redis.get(self._ks.send(request_id))
        return SendRecord.model_validate_json(data) if data is not None else None

    def load_many(self, request_ids: list[str]) -> list[SendRecord | None]:
        if not request_ids:
            return []
        values = self._redis.mget([self._ks.send(r) for r in request_ids])
        return [SendRecord.model_validate_json(v) if v is not None else None for v in values]

    def keys_of(self, request_id: str, sender: str) -> tuple[str, str]:
        """What creating a record reads, to be watched: the record and its sender's nonce claims."""
        return self._ks.send(request_id), self._ks.sender_nonces(sender)

    def creating(self, pipe: redis.client.Pipeline, record: SendRecord, due_at: float,
                 events: list[OutgoingEvent] | None = None) -> Callable[[redis.client.Pipeline], None] | None:
        """The creation of `record`, checked under WATCH of `keys_of` (the caller's transaction):
        the writes to queue inside its MULTI, or None when the request already has a record.

        Raises:
            NonceTaken: the nonce is held by another request (the caller signs again on a free one).
        """
        key, nonces = self.keys_of(record.request.request_id, record.sender)
        if pipe.exists(key):
            return None
        holder = pipe.hget(nonces, record.nonce)
        if holder is not None and holder.decode() != record.request.request_id:
            raise NonceTaken(f"nonce {record.nonce} of {record.sender} is held by another request")

        def queue(pipe: redis.client.Pipeline) -> None:
            pipe.set(key, record.model_dump_json())
            pipe.hset(nonces, record.nonce, record.request.request_id)
            pipe.zadd(self._ks.sends_inflight, {record.request.request_id: due_at})
            for event in events or []:
                self._outbox.append(pipe, event)

        return queue

    def create(self, record: SendRecord, due_at: float, events: list[OutgoingEvent] | None = None) -> bool:
        """Store a new record with its nonce claim. False when the request already has a record.

        Raises:
            NonceTaken: the nonce is held by another request (the caller signs again on a free one).
        """

        def write(pipe: redis.client.Pipeline) -> bool:
            queue = self.creating(pipe, record, due_at, events)
            if queue is None:
                return False
            pipe.multi()
            queue(pipe)
            return True

        return self._redis.transaction(write, *self.keys_of(record.request.request_id, record.sender),
                                       value_from_callable=True)

    def update(self, request_id: str, mutate: Callable[[SendRecord], Change],
               due_at: float | None = None) -> SendRecord | None:
        """Apply `mutate` to the stored record atomically, with its events; returns the record as
        stored afterwards (unchanged if `mutate` said None).

        Raises:
            NonceTaken: the mutation moved the request to a nonce another request holds.
        """
        key = self._ks.send(request_id)
        first = self.load(request_id)
        if first is None:
            return None
        nonces = self._ks.sender_nonces(first.sender)

        def write(pipe: redis.client.Pipeline) -> SendRecord | None:
            data = pipe.get(key)
            if data is None:
                return None
            old = SendRecord.model_validate_json(data)
            change = mutate(old)
            if change is None:
                return old
            new, events = change
            holder = pipe.hget(nonces, new.nonce) if new.in_flight() else None
            if holder is not None and holder.decode() != request_id:
                raise NonceTaken(f"nonce {new.nonce} of {new.sender} is held by another request")
            old_holder = pipe.hget(nonces, old.nonce)
            pipe.multi()
            if old.in_flight() and (not new.in_flight() or new.nonce != old.nonce) \
                    and old_holder is not None and old_holder.decode() == request_id:
                pipe.hdel(nonces, old.nonce)
            if new.in_flight():
                pipe.hset(nonces, new.nonce, request_id)
                pipe.set(key, new.model_dump_json())
                if due_at is not None:
                    pipe.zadd(self._ks.sends_inflight, {request_id: due_at})
            else:
                # Done: remembered as long as any request id is, which bounds a late duplicate.
                pipe.set(key, new.model_dump_json(), ex=REQUEST_MEMORY_SECONDS)
                pipe.zrem(self._ks.sends_inflight, request_id)
            for event in events:
                self._outbox.append(pipe, event)
            return new

        return self._redis.transaction(write, key, nonces, value_from_callable=True)

    def inflight(self, limit: int = 10_000) -> list[tuple[str, float]]:
        """Request ids in flight, with when the tracker should next act on each."""
        return [(r.decode(), float(s)) for r, s in
                self._redis.zrange(self._ks.sends_inflight, 0, limit - 1, withscores=True)]

    def set_due(self, request_ids: list[str], due_at: float) -> None:
        if request_ids:
            # XX: only requests still in flight (a finished one must not come back).
            self._redis.zadd(self._ks.sends_inflight, dict.fromkeys(request_ids, due_at), xx=True)


def now() -> float:
    return time.time()
