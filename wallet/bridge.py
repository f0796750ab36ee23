"""Relay from the outbox to Kafka: in order, at-least-once, one relay at a time."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import LockError
from redis.lock import Lock

from wallet.durability import FsyncTimedOut
from wallet.metrics import NO_METRICS, PRODUCE_ERRORS, RELAYED, Metrics
from wallet.outbox import STREAM_START, Outbox, OutboxEntry

log = logging.getLogger(__name__)

# How long a relay waits on the stream for new entries before checking its budget and lock again.
WAIT_MS = 200


class Publisher(Protocol):
    def publish(self, entries: Sequence[OutboxEntry]) -> int:
        """Send in order; return how many leading entries the broker acknowledged."""


@dataclass(frozen=True)
class RelaySummary:
    forwarded: int
    failed_batches: int
    ran: bool  # False when another relay held the lock
    finished_on_time: bool  # True when it stopped because its budget ran out, not for a lost lock


def relay_once(outbox: Outbox, publisher: Publisher, cursor: str, batch_size: int,
               block_ms: int | None, metrics: Metrics = NO_METRICS,
               durable: Callable[[], None] = lambda: None, linger_ms: int = 0) -> tuple[int, str, bool]:
    """Forward one batch after `cursor`. Returns (forwarded, next cursor, failed).

    `durable` returns once everything written so far is on disk (wallet/durability.py): an
    entry is forwarded only once the state written with it would survive a host crash.

    Only the acknowledged prefix is deleted. After a failure the cursor goes back to the start, so
    the unacknowledged entries, and everything after them, are sent again in order: a later event
    of an address never overtakes an earlier one that failed.
    """
    entries = outbox.read_after(cursor, batch_size, block_ms)
    if not entries:
        return 0, cursor, False
    if linger_ms and len(entries) < batch_size:
        time.sleep(linger_ms / 1000)  # more are often on their way: forward them in the same batch
        entries += outbox.read_after(entries[-1].entry_id, batch_size - len(entries))
    try:
        durable()
    except FsyncTimedOut as exc:
        log.warning("not forwarding %d entries yet: %s", len(entries), exc)
        return 0, cursor, True
    acked = publisher.publish(entries)
    outbox.remove([e.entry_id for e in entries[:acked]])
    if metrics.enabled:
        by_topic: dict[str, int] = {}
        for entry in entries[:acked]:
            by_topic[entry.topic] = by_topic.get(entry.topic, 0) + 1
        for topic, n in by_topic.items():
            metrics.inc(RELAYED, n, topic=topic)
        if acked < len(entries):
            metrics.inc(PRODUCE_ERRORS)
    if acked < len(entries):
        log.warning("publish failed: %d of %d acknowledged; the rest stay in the outbox",
                    acked, len(entries))
        return acked, STREAM_START, True
    return acked, entries[-1].entry_id, False


def run_relay(outbox: Outbox, publisher: Publisher, lock: Lock, *, budget_seconds: float,
              batch_size: int, clock: Callable[[], float] = time.monotonic,
              backoff: Callable[[int], None] | None = None, metrics: Metrics = NO_METRICS,
              stopping: Callable[[], bool] = lambda: False,
              durable: Callable[[], None] = lambda: None, linger_ms: int = 0) -> RelaySummary:
    """Forward until the budget is spent, holding `lock` so that relays never run side by side.
    `stopping` (the worker is shutting down) ends it early and frees the lock for the next relay;
    `durable` is relay_once's fsync barrier."""
    if not lock.acquire(blocking=False):
        return RelaySummary(forwarded=0, failed_batches=0, ran=False, finished_on_time=False)
    backoff = backoff or _sleep_backoff
    deadline = clock() + budget_seconds
    forwarded = failures = consecutive = 0
    cursor = STREAM_START
    try:
        while clock() < deadline and not stopping():
            sent, cursor, failed = relay_once(outbox, publisher, cursor, batch_size, WAIT_MS, metrics, durable,
                                              linger_ms)
            forwarded += sent
            if failed:
                failures += 1
                consecutive += 1
                backoff(consecutive)
            else:
                consecutive = 0
            try:
                lock.reacquire()
            except LockError:
                # Our lease ran out (a paused process?) and another relay may be running: stop.
                log.warning("bridge lock lost; stopping this relay")
                return RelaySummary(forwarded, failures, ran=True, finished_on_time=False)
        # Stopped for a shutdown: no successor from here; beat's watchdog starts one elsewhere.
        return RelaySummary(forwarded, failures, ran=True, finished_on_time=not stopping())
    finally:
        with contextlib.suppress(LockError):  # an expired lease is already free
            lock.release()


def _sleep_backoff(attempt: int) -> None:
    time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
