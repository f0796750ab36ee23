"""What the operator must hear about the node, said once on `errors`, not once per failed retry.

- `chain.unavailable` / `chain.recovered`: an outage and its end.
- `chain.degraded`: the node cannot trace (no tracer, or pruned state), so ETH moved to our
  addresses by contracts is not seen; once per episode and reason.
- `block.unreadable`: a height the node cannot serve for a non-transient reason; once per height
  and code. The watermark stays below it until it reads.
- `chain.mismatch`: the node serves another chain id than configured; nothing is scanned.
- `chain.endpoint_switched`: the endpoint in use changed.
Each flag and its event are written in one MULTI/EXEC, so a crash never loses the announcement
nor makes it twice. Payloads name a node by scheme://host:port only.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from wallet.events import (
    EVENT_BLOCK_UNREADABLE,
    EVENT_CHAIN_DEGRADED,
    EVENT_CHAIN_MISMATCH,
    EVENT_CHAIN_RECOVERED,
    EVENT_CHAIN_UNAVAILABLE,
    EVENT_ENDPOINT_SWITCHED,
    chain_notice_event,
    utc_now,
)
from wallet.outbox import Outbox
from wallet.state.keyspace import Keyspace

TRACING_UNAVAILABLE = "tracing_unavailable"
_DEGRADED_MESSAGES = {
    "no_tracer": "the node has neither debug_traceBlockByNumber nor trace_block",
    "pruned_state": "the node no longer keeps the state to trace these blocks (set WALLET_ETH_TRACE_RPC_URL "
                    "to an archive node, then `wallet scan rescan --untraced`)",
}


class ChainHealth:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, outbox: Outbox, chain_id: int,
                 endpoint: str) -> None:
        self._redis = client
        self._ks = keyspace
        self._outbox = outbox
        self._chain_id = chain_id
        self._endpoint = endpoint  # scheme://host:port: never the full URL, it may hold an API key

    def unavailable(self, code: str, message: str) -> bool:
        """Record an outage; returns True when this call started it (and announced it)."""
        since = utc_now().isoformat()
        return self._once(self._ks.chain_outage, orjson.dumps({"since": since, "code": code}),
                          EVENT_CHAIN_UNAVAILABLE, (since,),
                          {"code": "chain_unavailable", "cause": code, "message": message, "since": since})

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
            self._outbox.append(pipe, chain_notice_event(
                self._chain_id, EVENT_CHAIN_RECOVERED, (since,),
                {"code": "chain_recovered", "since": since, "endpoint": self._endpoint}))
            return True
        return self._redis.transaction(write, key, value_from_callable=True)

    def degraded(self, reason: str, height: int) -> bool:
        """Internal transfers cannot be seen at `height` (and likely beyond); said once per reason
        until tracing works again (`tracing_restored`)."""
        since = utc_now().isoformat()
        return self._once(self._ks.chain_notice(f"degraded:{reason}"), since.encode(), EVENT_CHAIN_DEGRADED,
                          (reason, since), {
                              "code": TRACING_UNAVAILABLE, "capability": "internal_transfers", "reason": reason,
                              "first_height": height, "since": since,
                              "message": "internal transfers (ETH sent to our addresses by contracts) are not "
                                         f"seen: {_DEGRADED_MESSAGES.get(reason, reason)}",
                          })

    def tracing_restored(self) -> None:
        self._redis.delete(*(self._ks.chain_notice(f"degraded:{r}") for r in _DEGRADED_MESSAGES))

    def unreadable(self, height: int, code: str, message: str) -> bool:
        """A height the node cannot serve (after retries); once per height and code."""
        since = utc_now().isoformat()
        key = self._ks.unreadable_heights

        def write(pipe: redis.client.Pipeline) -> bool:
            current = pipe.hget(key, str(height))
            if current is not None and orjson.loads(current)["code"] == code:
                return False
            pipe.multi()
            pipe.hset(key, str(height), orjson.dumps({"code": code, "message": message, "since": since}))
            self._outbox.append(pipe, chain_notice_event(
                self._chain_id, EVENT_BLOCK_UNREADABLE, (height, code, since), {
                    "code": "block_unreadable", "cause": code, "height": height, "message": message,
                    "endpoint": self._endpoint, "since": since}))
            return True
        return self._redis.transaction(write, key, value_from_callable=True)

    def unreadable_heights(self) -> dict[int, dict[str, Any]]:
        return {int(h): orjson.loads(v) for h, v in self._redis.hgetall(self._ks.unreadable_heights).items()}

    def mismatch(self, expected: int, actual: int) -> bool:
        """The node serves chain `actual`, not `expected`; once per (endpoint, actual)."""
        since = utc_now().isoformat()
        return self._once(self._ks.chain_notice(f"mismatch:{actual}"), since.encode(), EVENT_CHAIN_MISMATCH,
                          (self._endpoint, actual), {
                              "code": "chain_id_mismatch", "expected_chain_id": expected, "node_chain_id": actual,
                              "endpoint": self._endpoint, "since": since,
                              "message": f"the node at {self._endpoint} serves chain {actual}, not {expected}: "
                                         "nothing is scanned or sent until WALLET_CHAIN_ID or the node is fixed",
                          })

    def endpoint_switched(self, previous: str, current: str, reason: str) -> None:
        since = utc_now().isoformat()
        pipe = self._redis.pipeline(transaction=True)
        self._outbox.append(pipe, chain_notice_event(
            self._chain_id, EVENT_ENDPOINT_SWITCHED, (previous, current, since),
            {"code": "endpoint_switched", "from": previous, "to": current, "reason": reason, "since": since}))
        pipe.execute()

    def _once(self, flag: str, value: bytes, event_type: str, identity: tuple[str | int, ...],
              payload: dict[str, Any]) -> bool:
        def write(pipe: redis.client.Pipeline) -> bool:
            if pipe.exists(flag):
                return False
            pipe.multi()
            pipe.set(flag, value)
            self._outbox.append(pipe, chain_notice_event(
                self._chain_id, event_type, identity, {"endpoint": self._endpoint, **payload}))
            return True
        return self._redis.transaction(write, flag, value_from_callable=True)
