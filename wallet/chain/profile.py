"""What each node endpoint offers, probed and remembered where operators (and `scan status`) see it.

A worker probes when it starts, the scheduler again every `REPROBE_SECONDS`, and a block task
after repeated failures (a load balancer may have moved us to a node of another kind). A node
that serves another chain id than configured is refused: announced once and never scanned.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from wallet.chain.budget import endpoint_id
from wallet.chain.endpoints import FailoverRpc
from wallet.chain.health import ChainHealth
from wallet.chain.rpc import NodeCapabilities, RpcClient
from wallet.errors import ChainIdMismatch, ChainUnavailable
from wallet.state.keyspace import Keyspace

REPROBE_SECONDS = 300.0


class NodeProfiles:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, health: ChainHealth,
                 expected_chain_id: int | None) -> None:
        self._redis = client
        self._ks = keyspace
        self._health = health
        self._expected = expected_chain_id
        self._probed_at: dict[str, float] = {}  # per process: when this process last probed an endpoint

    def probe(self, reader: RpcClient | FailoverRpc) -> NodeCapabilities:
        """Probe every endpoint of `reader` that answers and remember what each offers; returns the
        first one's. Raises ChainIdMismatch (after announcing it once) when one serves another
        chain; ChainUnavailable when none answers."""
        found: list[NodeCapabilities] = []
        error: ChainUnavailable | None = None
        for rpc in reader.endpoints():
            try:
                found.append(self._probe_one(rpc))
            except ChainUnavailable as exc:
                error = error or exc
        if not found:
            assert error is not None
            raise error
        return found[0]

    def _probe_one(self, rpc: RpcClient) -> NodeCapabilities:
        caps = rpc.probe()
        self._probed_at[rpc.url] = time.monotonic()
        self._redis.hset(self._ks.node_capabilities, endpoint_id(rpc.url), orjson.dumps(caps.to_json()))
        if self._expected is not None and caps.chain_id != self._expected:
            self._health.mismatch(self._expected, caps.chain_id)
            raise ChainIdMismatch(
                f"the node at {caps.endpoint} serves chain {caps.chain_id}, but WALLET_CHAIN_ID is {self._expected}",
                details={"endpoint": caps.endpoint, "node_chain_id": caps.chain_id,
                         "expected_chain_id": self._expected})
        return caps

    def probe_if_due(self, reader: RpcClient | FailoverRpc) -> None:
        last = min((self._probed_at.get(rpc.url, 0.0) for rpc in reader.endpoints()), default=0.0)
        if not last or time.monotonic() - last > REPROBE_SECONDS:
            self.probe(reader)

    def known(self) -> list[dict[str, Any]]:
        """What every endpoint was last found to offer (nothing secret: endpoints are scheme://host:port)."""
        return [orjson.loads(v) for v in self._redis.hvals(self._ks.node_capabilities)]
