"""Block scanning tasks: the beat-driven scheduler fans out one process_block per height."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from typing import Any

import redis
from celery import shared_task
from celery.utils.log import get_task_logger

from tasks.deps import wiring
from wallet.deposits.scanner import height_groups
from wallet.errors import ChainUnavailable, RetryableError

log = get_task_logger(__name__)


@shared_task(name="tasks.blocks.schedule_blocks", ignore_result=True)
def schedule_blocks() -> dict[str, Any]:
    """Read the head, re-check recent hashes, hand out heights, confirm deep-enough deposits."""
    w = wiring()
    lock = w.redis.lock(w.keyspace.scheduler_lock, timeout=60)
    if not lock.acquire(blocking=False):
        return {"ran": False}
    try:
        try:
            head = w.rpc.head()
            heights = w.scanner.plan(
                head, start_height=w.settings.start_height, max_new=w.settings.scan_max_new_per_tick,
                stale_seconds=w.settings.scan_stale_seconds,
            )
        except ChainUnavailable as exc:
            if w.chain_health.unavailable(exc.code, exc.message):
                log.warning("node unavailable: %s", exc.message)
            return {"ran": True, "head": None}
        w.chain_health.available()
        # Enqueue first, record after: a crash in between re-enqueues, never skips a height.
        for group in height_groups(heights, w.settings.scan_group_size):
            if len(group) == 1:
                process_block.delay(group[0])
            else:
                process_blocks.delay(group)
        w.scanner.mark_scheduled(heights)
        confirmed = w.scanner.confirm(head)
        return {"ran": True, "head": head, "scheduled": len(heights), "confirmed": confirmed}
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


# A block task retries until the node and Redis answer: a height is never given up on.
_BLOCK_TASK_OPTIONS = {
    "autoretry_for": (RetryableError, redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": None,
}


@shared_task(name="tasks.blocks.process_block", **_BLOCK_TASK_OPTIONS)
def process_block(height: int) -> dict[str, Any]:
    """Scan one height. Idempotent: a redelivered or repeated task records nothing new."""
    return asdict(wiring().scanner.process_block(int(height)))


@shared_task(name="tasks.blocks.process_blocks", **_BLOCK_TASK_OPTIONS)
def process_blocks(heights: list[int]) -> dict[str, Any]:
    """Scan a group of heights with one fetch. Idempotent per block, so a retry of the whole group
    after one bad block re-records nothing that was already recorded."""
    results = wiring().scanner.process_blocks([int(h) for h in heights])
    return {"blocks": len(results), "deposits": sum(r.deposits for r in results),
            "reverted": sum(r.reverted for r in results)}


@shared_task(name="tasks.blocks.rescan", ignore_result=False)
def rescan(start: int, end: int) -> dict[str, Any]:
    """Scan a height range again; deposits already recorded for the same block emit nothing."""
    heights = list(range(int(start), int(end) + 1))
    for group in height_groups(heights, wiring().settings.scan_group_size):
        process_blocks.delay(group)
    return {"enqueued": len(heights)}
