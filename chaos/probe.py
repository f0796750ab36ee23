"""Where the system stands, read from outside: head, watermark, outbox; and "caught up".

Caught up after a moment T means: every process is up and ready, the scanner's watermark has
reached the head the chain had at T, and no event written before T still waits in the outbox.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from chaos.chain import Depositor
from chaos.processes import Orchestrator
from wallet.state.keyspace import Keyspace


@dataclass(frozen=True)
class Position:
    head: int | None
    watermark: int | None
    outbox: int | None
    outbox_oldest_ms: int | None  # stream ids start with the entry's write time in ms


class SystemProbe:
    def __init__(self, redis_url: str, key_prefix: str, depositor: Depositor, orchestrator: Orchestrator) -> None:
        # Short timeouts: a paused Redis must not stall the progress display or a recovery clock.
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        self._keys = Keyspace(key_prefix)
        self._depositor = depositor
        self._orchestrator = orchestrator

    def head(self) -> int | None:
        try:
            return int(self._depositor.w3.eth.block_number)
        except Exception:  # noqa: BLE001 - the node paused or cut off
            return None

    def position(self) -> Position:
        head = self.head()
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(self._keys.watermark)
            pipe.xlen(self._keys.outbox)
            pipe.xrange(self._keys.outbox, count=1)
            watermark, length, oldest = pipe.execute()
        except redis.RedisError:
            return Position(head, None, None, None)
        oldest_ms = int(oldest[0][0].split(b"-")[0]) if oldest else None
        return Position(head, int(watermark) if watermark is not None else None, int(length), oldest_ms)

    def caught_up(self, head_then: int, since_ms: int) -> bool:
        if not self._orchestrator.all_ready():
            return False
        now = self.position()
        return (now.watermark is not None and now.watermark >= head_then and now.outbox is not None
                and (now.outbox_oldest_ms is None or now.outbox_oldest_ms >= since_ms))

    def wait_caught_up(self, head_then: int, since_ms: int, timeout: float) -> float | None:
        """Seconds from now until caught up (None: not within `timeout`)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.caught_up(head_then, since_ms):
                return time.monotonic() - started
            time.sleep(0.2)
        return None

    def close(self) -> None:
        self._redis.close()
