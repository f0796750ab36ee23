"""Announcing a node outage once on `errors`, and its end, instead of once per failed retry."""

from __future__ import annotations

import orjson
import redis

from wallet.events import (
    EVENT_CHAIN_RECOVERED,
    EVENT_CHAIN_UNAVAILABLE,
    TOPIC_ERRORS,
    Envelope,
    OutgoingEvent,
    event_id_for,
    utc_now,
)
from wallet.outbox import Outbox
from wallet.state.keyspace import Keyspace


class ChainHealth:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, outbox: Outbox, chain_id: int,
                 rpc_url: str) -> None:
        self._redis = client
        self._ks = keyspace
        self._outbox = outbox
        self._chain_id = chain_id
        self._rpc_url = rpc_url

    def unavailable(self, code: str, message: str) -> bool:
        """Record an outage; returns True when this call started it (and announced it)."""
        started = utc_now()
        key = self._ks.chain_outage

        def write(pipe: redis.client.Pipeline) -> bool:
            if pipe.exists(key):
                return False
            pipe.multi()
            pipe.set(key, orjson.dumps({"since": started.isoformat(), "code": code}))
            self._outbox.append(pipe, self._event(EVENT_CHAIN_UNAVAILABLE, started.isoformat(),
                                                  {"cause": code, "message": message,
                                                   "since": started.isoformat()}))
            return True
        return self._redis.transaction(write, key, value_from_callable=True)

    def available(self) -> bool:
        """Record that the node answers; returns True when this ended an outage."""
        key = self._ks.chain_outage

        def write(pipe: redis.client.Pipeline) -> bool:
            raw = pipe.get(key)
            if raw is None:
                return False
            since = orjson.loads(raw)["since"]
            pipe.multi()
            pipe.delete(key)
            self._outbox.append(pipe, self._event(EVENT_CHAIN_RECOVERED, since, {"since": since}))
            return True
        return self._redis.transaction(write, key, value_from_callable=True)

    def _event(self, event_type: str, since: str, payload: dict) -> OutgoingEvent:
        envelope = Envelope(
            event_id=event_id_for(self._chain_id, event_type, since),
            type=event_type, chain_id=self._chain_id, occurred_at=utc_now(),
            payload={"code": event_type.replace(".", "_"), "rpc_url": self._rpc_url, **payload},
        )
        return OutgoingEvent(topic=TOPIC_ERRORS, key=f"chain:{self._chain_id}", envelope=envelope)
