"""Block scanning tasks: the beat-driven scheduler fans out one process_block per height."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import redis
from celery import shared_task
from celery.utils.log import get_task_logger

from tasks.deps import wiring
from wallet.deposits.scanner import height_groups
from wallet.errors import ChainIdMismatch, ChainUnavailable, NodeTimedOut, RetryableError, WalletError
from wallet.state.locks import only_one

log = get_task_logger(__name__)


@shared_task(name="tasks.blocks.schedule_blocks", ignore_result=True)
def schedule_blocks() -> dict[str, Any]:
    """Read the head, re-check recent hashes, hand out heights, confirm deep-enough deposits."""
    w = wiring()
    with only_one(w.locks.scheduler()) as mine:
        if not mine:
            return {"ran": False}
        try:
            # A node of another chain is never scanned; what it offers is shown by `scan status`.
            w.node_profiles.probe_if_due(w.rpc)
            w.rpc.check_lag()  # with several endpoints: skip one that has fallen behind
            head_ref = w.rpc.head_ref()
            head = head_ref.number
            plan = w.scanner.plan(
                head_ref, start_height=w.settings.start_height, max_new=w.settings.scan_max_new_per_tick,
                stale_seconds=w.settings.scan_stale_seconds,
            )
        except ChainIdMismatch as exc:
            log.error("%s", exc.message)
            return {"ran": True, "head": None, "error": exc.code}
        except ChainUnavailable as exc:
            if w.chain_health.unavailable(exc.code, exc.message):
                log.warning("node unavailable: %s", exc.message)
            return {"ran": True, "head": None}
        w.chain_health.available()
        # Enqueue first, record after: a crash in between re-enqueues, never skips a height.
        for group in height_groups(plan.heights, w.settings.scan_group_size):
            if len(group) == 1:
                process_block.delay(group[0])
            else:
                process_blocks.delay(group)
        w.scanner.mark_scheduled(plan)
        confirmed = w.scanner.confirm(head)
        return {"ran": True, "head": head, "scheduled": len(plan.heights), "confirmed": confirmed}


# A block task retries until the node and Redis answer: a height is never given up on. Nor is it
# failing silently: see `_failing_loudly`.
_BLOCK_TASK_OPTIONS = {
    "bind": True,
    "autoretry_for": (RetryableError, redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": None,
    # Nobody waits on a block task's result: storing it (and its STARTED state) would be two more
    # fsynced Redis writes per task (appendfsync always). A caller that wants it asks per call.
    "ignore_result": True,
}


@contextlib.contextmanager
def _failing_loudly(task: Any, heights: list[int]) -> Iterator[None]:
    """After `scan_report_after_failures` failures in a row: re-probe the node (it may have been
    swapped behind a load balancer), report each height that still cannot be read once on
    `errors` (`block.unreadable`, with the reason), and split a group so one bad height does not
    hold its neighbours back. A node that is simply down is the scheduler's `chain.unavailable`."""
    try:
        yield
    except WalletError as exc:
        w = wiring()
        failures = task.request.retries + 1
        if failures < w.settings.scan_report_after_failures or isinstance(exc, ChainIdMismatch):
            raise
        if isinstance(exc, ChainUnavailable) and not isinstance(exc, NodeTimedOut):
            raise  # the node is unreachable or rate-limiting: an outage, not a bad height
        with contextlib.suppress(WalletError):
            w.node_profiles.probe(w.rpc)
        if len(heights) > 1:
            for height in heights:
                process_block.delay(height)
            log.warning("splitting heights %s..%s after %d failures: %s", heights[0], heights[-1], failures,
                        exc.message)
            return
        height = int(exc.details.get("height", heights[0]))
        if w.scanner.report_unreadable([height], exc.code, exc.message):
            log.error("height %d unreadable after %d tries: %s", height, failures, exc.message)
        raise


@shared_task(name="tasks.blocks.process_block", **_BLOCK_TASK_OPTIONS)
def process_block(self: Any, height: int) -> dict[str, Any]:
    """Scan one height. Idempotent: a redelivered or repeated task records nothing new."""
    with _failing_loudly(self, [int(height)]):
        return asdict(wiring().scanner.process_block(int(height)))
    return {"split": True}


@shared_task(name="tasks.blocks.process_blocks", **_BLOCK_TASK_OPTIONS)
def process_blocks(self: Any, heights: list[int], relearn: bool = False) -> dict[str, Any]:
    """Scan a group of heights with one fetch. Idempotent per block, so a retry of the whole group
    after one bad block re-records nothing that was already recorded. `relearn` (rescans): ask the
    node again whether it traces, rather than trusting what this worker learned before."""
    wanted = [int(h) for h in heights]
    with _failing_loudly(self, wanted):
        results = wiring().scanner.process_blocks(wanted, relearn=bool(relearn))
        return {"blocks": len(results), "deposits": sum(r.deposits for r in results),
                "reverted": sum(r.reverted for r in results)}
    return {"split": len(wanted)}


@shared_task(name="tasks.blocks.rescan", ignore_result=False)
def rescan(start: int | None = None, end: int | None = None, untraced: bool = False) -> dict[str, Any]:
    """Scan heights again: a range (up to the head), or every height recorded without internal
    transfers (`untraced`: after pointing WALLET_ETH_TRACE_RPC_URL at a tracing node). Deposits
    already recorded for the same block emit nothing; only what was missing is announced."""
    w = wiring()
    head = w.rpc.head()
    heights = w.scanner.rescan_heights(head, start, end, untraced)
    return {"enqueued": _enqueue(w, heights), "head": head,
            "first": heights[0] if heights else None, "last": heights[-1] if heights else None}


def _enqueue(w: Any, heights: list[int]) -> int:
    for group in height_groups(heights, w.settings.scan_group_size):
        process_blocks.delay(group, relearn=True)
    return len(heights)
