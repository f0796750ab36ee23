"""The block ledger: which heights are scheduled, in flight, done, and the contiguous watermark.

Blocks finish out of order. A block's events are staged, not appended to the outbox, until the
watermark reaches that block; the watermark advance moves them into the outbox in height order,
so one address's deposit events reach Kafka in chain order, whatever order the workers finished in.
"""

from __future__ import annotations

import time

import redis

from wallet.events import OutgoingEvent
from wallet.outbox import ENTRY_FIELDS, entry_values
from wallet.state.keyspace import Keyspace

# Advance the watermark over contiguous done heights, releasing each height's staged events into
# the outbox in order. Atomic, so a crash never releases a height twice or skips one.
# A height at or below the watermark (re-scanned after a reorg) releases its staged events at once.
# KEYS: watermark, done zset, outbox stream, inflight zset.
# ARGV: staged key prefix, height just done, then the outbox's four entry field names.
_ADVANCE = """
local wm = tonumber(redis.call('GET', KEYS[1]) or '-1')
local released = 0
local function release(height)
  local staged = ARGV[1] .. height
  local entries = redis.call('LRANGE', staged, 0, -1)
  for i = 1, #entries, 4 do
    redis.call('XADD', KEYS[3], '*', ARGV[3], entries[i], ARGV[4], entries[i + 1],
               ARGV[5], entries[i + 2], ARGV[6], entries[i + 3])
    released = released + 1
  end
  redis.call('DEL', staged)
end
local done = tonumber(ARGV[2])
if done and done <= wm then
  release(done)
  redis.call('ZREM', KEYS[2], done)
  redis.call('ZREM', KEYS[4], done)
end
while true do
  local next_height = wm + 1
  if not redis.call('ZSCORE', KEYS[2], next_height) then break end
  release(next_height)
  redis.call('ZREM', KEYS[2], next_height)
  redis.call('ZREM', KEYS[4], next_height)
  wm = next_height
end
redis.call('SET', KEYS[1], wm)
return {wm, released}
"""


class BlockLedger:
    def __init__(self, client: redis.Redis, keyspace: Keyspace) -> None:
        self._redis = client
        self._ks = keyspace
        self._advance = client.register_script(_ADVANCE)

    # ---- cursors
    def watermark(self) -> int | None:
        value = self._redis.get(self._ks.watermark)
        return int(value) if value is not None else None

    def scheduled_height(self) -> int | None:
        value = self._redis.get(self._ks.scheduled_height)
        return int(value) if value is not None else None

    def initialize(self, start_height: int) -> bool:
        """A fresh install starts scanning at `start_height`. Returns False if already started."""
        pipe = self._redis.pipeline()
        pipe.set(self._ks.watermark, start_height - 1, nx=True)
        pipe.set(self._ks.scheduled_height, start_height - 1, nx=True)
        return all(pipe.execute())

    def mark_scheduled(self, heights: list[int], now: float | None = None) -> None:
        """Record heights as handed to tasks. Called after enqueueing: a crash in between re-enqueues
        (harmless, block tasks are idempotent) rather than leaving a height never scheduled."""
        if not heights:
            return
        now = time.time() if now is None else now
        pipe = self._redis.pipeline()
        pipe.zadd(self._ks.inflight, {str(h): now for h in heights})
        # Only ever forward: a late scheduler must not move the cursor back.
        pipe.eval("local c = tonumber(redis.call('GET', KEYS[1]) or '-1') "
                  "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end",
                  1, self._ks.scheduled_height, max(heights))
        pipe.execute()

    def checked_head(self) -> str | None:
        """The head block hash the last completed reorg check was made against."""
        value = self._redis.get(self._ks.checked_head)
        return value.decode() if value is not None else None

    def unchecked_heights(self) -> list[int]:
        """Heights recorded since the last reorg check."""
        return sorted(int(h) for h in self._redis.smembers(self._ks.unchecked_heights))

    def mark_checked(self, head_hash: str, heights: list[int]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._ks.checked_head, head_hash)
        if heights:
            pipe.srem(self._ks.unchecked_heights, *(str(h) for h in heights))
        pipe.execute()

    def stale_inflight(self, older_than_seconds: float, now: float | None = None) -> list[int]:
        """Heights whose task has not finished for a while: lost with a dead worker, to re-enqueue."""
        now = time.time() if now is None else now
        return [int(h) for h in self._redis.zrangebyscore(self._ks.inflight, 0, now - older_than_seconds)]

    def inflight_count(self) -> int:
        return int(self._redis.zcard(self._ks.inflight))

    def scanned_hash(self, height: int) -> str | None:
        value = self._redis.hget(self._ks.block_hashes, str(height))
        return value.decode() if value is not None else None

    def scanned_hashes(self, heights: list[int]) -> dict[int, str | None]:
        if not heights:
            return {}
        values = self._redis.hmget(self._ks.block_hashes, [str(h) for h in heights])
        return {h: (v.decode() if v is not None else None) for h, v in zip(heights, values, strict=True)}

    def finish_in(self, pipe: redis.client.Pipeline, height: int, block_hash: str) -> None:
        """Queue on the caller's MULTI: the height is done with this hash; advance the watermark."""
        pipe.hset(self._ks.block_hashes, str(height), block_hash)
        pipe.hdel(self._ks.unreadable_heights, str(height))  # it reads now
        pipe.sadd(self._ks.unchecked_heights, str(height))  # for the next reorg check
        pipe.zadd(self._ks.done_heights, {str(height): height})
        self._advance(
            keys=[self._ks.watermark, self._ks.done_heights, self._ks.outbox, self._ks.inflight],
            args=[f"{self._ks.prefix}:blocks:staged:", height, *ENTRY_FIELDS],
            client=pipe,
        )

    def mark_untraced_in(self, pipe: redis.client.Pipeline, height: int, reason: str) -> None:
        """Queue on the caller's MULTI: the height was checked without internal transfers."""
        pipe.hset(self._ks.untraced_blocks, str(height), reason)

    def clear_untraced_in(self, pipe: redis.client.Pipeline, height: int) -> None:
        pipe.hdel(self._ks.untraced_blocks, str(height))

    def untraced_reason(self, height: int) -> str | None:
        value = self._redis.hget(self._ks.untraced_blocks, str(height))
        return value.decode() if value is not None else None

    def untraced(self) -> dict[int, str]:
        """Every height recorded without internal transfers, with the reason."""
        return {int(h): v.decode() for h, v in self._redis.hgetall(self._ks.untraced_blocks).items()}

    def stage_in(self, pipe: redis.client.Pipeline, height: int, event: OutgoingEvent) -> None:
        """Queue on the caller's MULTI: the event goes out when the watermark passes `height`."""
        pipe.rpush(self._ks.staged_events(height), *entry_values(event))

    def scanned_heights(self) -> list[int]:
        """The heights whose scanned hash is kept (the recent ones)."""
        return sorted(int(h) for h in self._redis.hkeys(self._ks.block_hashes))

    def forget_hashes_below(self, height: int) -> None:
        """Drop stored hashes of heights too deep to be re-checked: keeps the hash bounded."""
        stale = [k for k in self._redis.hkeys(self._ks.block_hashes) if int(k) < height]
        if stale:
            self._redis.hdel(self._ks.block_hashes, *stale)
