"""The bridge task: forwards the outbox to Kafka."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from celery import shared_task

from tasks.deps import publisher, wiring
from wallet.bridge import run_relay

log = logging.getLogger(__name__)


@shared_task(name="tasks.bridge.relay_outbox", ignore_result=True)
def relay_outbox() -> dict[str, Any]:
    """Forward for one budget, then hand over to a successor so forwarding has no gap.

    Beat also sends this every few seconds as a watchdog: while a relay holds the lock, those
    return at once; after a crash, the next one takes over.
    """
    w = wiring()
    pub = publisher()
    lock = w.redis.lock(w.keyspace.bridge_lock, timeout=w.settings.bridge_lock_seconds)
    summary = run_relay(
        w.outbox, pub, lock,
        budget_seconds=w.settings.bridge_budget_seconds,
        batch_size=w.settings.bridge_batch_size,
    )
    if summary.finished_on_time:
        relay_outbox.apply_async()
    return asdict(summary)
