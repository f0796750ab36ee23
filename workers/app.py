"""The Celery app: `celery -A workers.app worker|beat|flower`."""

from __future__ import annotations

import logging
import os
import sys

from celery import Celery
from celery.signals import celeryd_after_setup

from tasks.deps import wiring
from wallet.errors import CustodyError

log = logging.getLogger(__name__)

KEY_QUEUE = "keys"

app = Celery("eth_wallet_manager", include=["tasks.accounts", "tasks.blocks", "tasks.bridge"])
app.config_from_object("celeryconfig")


@celeryd_after_setup.connect
def check_custody(sender: str, instance, **_: object) -> None:
    """A worker that consumes the key queue must open the vault before taking work: a missing or
    wrong master key stops it at start-up, instead of failing (or worse) on the first request."""
    queues = set(instance.app.amqp.queues.consume_from or instance.app.amqp.queues)
    if KEY_QUEUE not in queues:
        return
    try:
        wiring().vault.start()
    except CustodyError as exc:
        log.critical("refusing to start %s: %s", sender, exc)
        print(f"error: refusing to start {sender}: [{exc.code}] {exc}", file=sys.stderr, flush=True)
        # os._exit: Celery's signal dispatch swallows exceptions, and this must not be ignored.
        os._exit(3)
