"""Several node endpoints in order of preference (`WALLET_ETH_RPC_URLS`), used as one reader.

Every call goes to the most preferred endpoint that is not marked down. One that fails (down,
HTTP 5xx, timeouts, rate limits past the wait, garbage where another endpoint answers) or whose
head lags the best head by more than `max_lag` blocks is marked down for `cooldown` seconds, in
Redis, so every worker on every host skips it; the call is tried on the next one. Each switch is
announced once (`chain.endpoint_switched`): by the process whose mark took effect, and again when
the preferred endpoint is back in use. Each endpoint keeps its own learned capabilities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
import redis

from wallet.chain.budget import endpoint_id
from wallet.chain.health import ChainHealth
from wallet.chain.model import BlockBundle, BlockRef
from wallet.chain.rpc import NodeCapabilities, RpcClient
from wallet.errors import ChainDataInvalid, ChainUnavailable
from wallet.state.keyspace import Keyspace

T = TypeVar("T")
_MARKS_CACHE_SECONDS = 1.0


class FailoverRpc:
    """The reading interface of `RpcClient` over several endpoints. One per thread, like RpcClient."""

    def __init__(self, clients: Sequence[RpcClient], client: redis.Redis, keyspace: Keyspace,
                 health: ChainHealth, cooldown: float = 30.0, max_lag: int = 5) -> None:
        if not clients:
            raise ValueError("at least one endpoint")
        self.clients = list(clients)
        self._redis = client
        self._key = keyspace.endpoint_health
        self._health = health
        self._cooldown = cooldown
        self._max_lag = max_lag
        self._marks: dict[str, dict[str, Any]] = {}
        self._marks_read = 0.0
        self.current = self.clients[0]

    # ---- what RpcClient offers
    @property
    def url(self) -> str:
        return self.current.url

    @property
    def display_url(self) -> str:
        return self.current.display_url

    @property
    def tracer(self) -> str | None:
        return self.current.tracer

    @property
    def tracing_available(self) -> bool | None:
        return self.current.tracing_available

    def head(self) -> int:
        return self._run(lambda c: c.head())

    def head_ref(self) -> BlockRef:
        return self._run(lambda c: c.head_ref())

    def chain_id(self) -> int:
        return self._run(lambda c: c.chain_id())

    def block_refs(self, heights: Sequence[int]) -> dict[int, BlockRef | None]:
        return self._run(lambda c: c.block_refs(heights))

    def fetch_blocks(self, heights: Sequence[int], with_traces: bool) -> list[BlockBundle]:
        return self._run(lambda c: c.fetch_blocks(heights, with_traces))

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        return self._run(lambda c: c.batch(calls))

    def supports_tracing(self) -> bool:
        return self._run(lambda c: c.supports_tracing())

    def probe(self) -> NodeCapabilities:
        return self._run(lambda c: c.probe())

    def endpoints(self) -> list[RpcClient]:
        return list(self.clients)

    def forget_capabilities(self) -> None:
        for c in self.clients:
            c.forget_capabilities()

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def __enter__(self) -> FailoverRpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- lag
    def check_lag(self) -> dict[str, int | None]:
        """Read every endpoint's head; mark down those more than `max_lag` behind the best.
        Returns each endpoint's head (None: no answer), by display URL."""
        heads: dict[int, int | None] = {}
        for i, c in enumerate(self.clients):
            try:
                heads[i] = c.head()
            except (ChainUnavailable, ChainDataInvalid) as exc:
                heads[i] = None
                self._mark_down(c, exc.code)
        best = max((h for h in heads.values() if h is not None), default=None)
        if best is not None:
            for i, h in heads.items():
                if h is not None and best - h > self._max_lag:
                    self._mark_down(self.clients[i], f"lagging {best - h} blocks behind the best head")
        return {self.clients[i].display_url: h for i, h in heads.items()}

    # ---- choosing
    def _run(self, call: Callable[[RpcClient], T]) -> T:
        first_error: Exception | None = None
        failed: list[tuple[RpcClient, str]] = []
        for client in self._candidates():
            try:
                result = call(client)
            except ChainUnavailable as exc:
                failed.append((client, f"{exc.code}: {exc.message[:200]}"))
                first_error = first_error or exc
                continue
            except ChainDataInvalid as exc:
                # Garbage from one endpoint, or a reorg between calls: only another endpoint's
                # good answer tells which, so the mark waits for that.
                failed.append((client, f"{exc.code}: {exc.message[:200]}"))
                first_error = first_error or exc
                continue
            for bad, reason in failed:
                self._mark_down(bad, reason)
            self._in_use(client)
            return result
        assert first_error is not None
        raise first_error

    def _candidates(self) -> list[RpcClient]:
        marks = self._read_marks()
        now = time.time()
        up = [c for c in self.clients if marks.get(endpoint_id(c.url), {}).get("down_until", 0) <= now]
        down = [c for c in self.clients if c not in up]
        return up + down  # all down: try them anyway, best first, rather than give up

    def _read_marks(self) -> dict[str, dict[str, Any]]:
        if time.monotonic() - self._marks_read > _MARKS_CACHE_SECONDS:
            self._marks = {k.decode(): orjson.loads(v) for k, v in self._redis.hgetall(self._key).items()}
            self._marks_read = time.monotonic()
        return self._marks

    def _mark_down(self, client: RpcClient, reason: str) -> None:
        field = endpoint_id(client.url)
        until = time.time() + self._cooldown

        def write(pipe: redis.client.Pipeline) -> bool:
            raw = pipe.hget(self._key, field)
            if raw is not None and orjson.loads(raw)["down_until"] > time.time():
                return False  # already down: another process announced it
            pipe.multi()
            pipe.hset(self._key, field, orjson.dumps({"down_until": until, "reason": reason,
                                                      "endpoint": client.display_url}))
            # Only a fresh mark is news; a lapsed one renewed (still failing) was announced already.
            return raw is None
        if self._redis.transaction(write, self._key, value_from_callable=True):
            self._marks_read = 0.0
            following = next((c for c in self._candidates() if c is not client), None)
            if following is not None and client is self.current:
                self._health.endpoint_switched(client.display_url, following.display_url, reason)

    def _in_use(self, client: RpcClient) -> None:
        if client is self.current:
            return
        previous, self.current = self.current, client
        # Back on a more preferred endpoint whose mark lapsed: clear it, and say so once.
        if (self.clients.index(client) < self.clients.index(previous)
                and self._redis.hdel(self._key, endpoint_id(client.url))):
            self._health.endpoint_switched(previous.display_url, client.display_url, "recovered")
