"""The Celery app: `celery -A workers.app worker|beat|flower`."""

from __future__ import annotations

import logging
import os
import sys

from celery import Celery
from celery.signals import celeryd_after_setup

from tasks.deps import wiring
from wallet.errors import ChainDataInvalid, ChainIdMismatch, ChainUnavailable, CustodyError

log = logging.getLogger(__name__)

KEY_QUEUE = "keys"

# Task modules and routes come from celeryconfig (`imports`, `task_routes`), derived from the
# command registry.
app = Celery("eth_wallet_manager")
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


@celeryd_after_setup.connect
def check_node(sender: str, instance, **_: object) -> None:
    """Every worker probes the node before taking work: a node of another chain than
    WALLET_CHAIN_ID is refused at start-up (and announced on `errors`), and what the node offers
    (receipts, tracer, batches) is recorded for `wallet scan status`. A node that does not answer
    yet is not a reason to refuse: tasks retry until it does."""
    w = wiring()
    try:
        # A client of its own, closed here: pool children forked later must not share its socket.
        with w.new_rpc_client() as rpc:
            caps = w.node_profiles.probe(rpc)
    except ChainIdMismatch as exc:
        log.critical("refusing to start %s: %s", sender, exc)
        print(f"error: refusing to start {sender}: [{exc.code}] {exc}", file=sys.stderr, flush=True)
        os._exit(3)
    except (ChainUnavailable, ChainDataInvalid) as exc:
        log.warning("node not probed at start-up (%s): %s", exc.code, exc.message)
        return
    log.info("node %s: chain %d, %s, receipts %s, tracer %s, batches %s", caps.endpoint, caps.chain_id,
             caps.client_version, "per block" if caps.block_receipts else "per transaction", caps.tracer,
             f"up to {caps.batch_limit}" if caps.batching else "refused")
