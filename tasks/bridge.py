"""The bridge task: forwards the outbox to Kafka."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from typing import Any

from celery import shared_task
from celery.signals import worker_shutting_down

from tasks.deps import publisher, wiring
from wallet.bridge import run_relay
from wallet.durability import RedisNotDurable
from wallet.metrics import RELAY_REFUSED

log = logging.getLogger(__name__)

# Set when this worker is asked to stop (SIGTERM, Ctrl-C): a running relay ends within one read
# (0.2 s) and releases its lock, instead of holding it until a kill and leaving a lease that
# would stall relaying for WALLET_BRIDGE_LOCK_SECONDS after a restart. The bridge runs a threads
# pool, so the relay sees this process's flag.
_shutting_down = threading.Event()


@worker_shutting_down.connect
def _stop_relaying(**_: object) -> None:
    _shutting_down.set()


@shared_task(name="tasks.bridge.relay_outbox", ignore_result=True)
def relay_outbox() -> dict[str, Any]:
    """Forward for one budget, then hand over to a successor so forwarding has no gap.

    Beat also sends this every few seconds as a watchdog: while a relay holds the lock, those
    return at once; after a crash, the next one takes over.
    """
    w = wiring()
    try:
        # Once per run (a budget, seconds): a Redis restarted with another config is seen soon.
        guarantee = w.durability.check()
    except RedisNotDurable as exc:
        # Loud, and on every watchdog tick until fixed: the outbox keeps growing meanwhile, and
        # nothing is lost; forwarding now could announce accounts a host crash makes Redis forget.
        log.error("relay refused [%s]: %s", exc.code, exc)
        w.metrics.inc(RELAY_REFUSED, code=exc.code)
        w.metrics.flush()
        raise
    log.debug("relay: outbox durability by %s", guarantee)
    pub = publisher()
    summary = run_relay(
        w.outbox, pub, w.locks.bridge(w.settings.bridge_lock_seconds),
        budget_seconds=w.settings.bridge_budget_seconds,
        batch_size=w.settings.bridge_batch_size, metrics=w.metrics, stopping=_shutting_down.is_set,
        durable=w.durability.barrier, linger_ms=w.settings.bridge_linger_ms,
    )
    if summary.finished_on_time:
        relay_outbox.apply_async()
    return asdict(summary)
