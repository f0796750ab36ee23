"""The Celery app: `celery -A workers.app worker|beat|flower`."""

from __future__ import annotations

import logging
import os
import sys

from celery import Celery
from celery.signals import celeryd_after_setup, task_failure, task_prerun, task_success

from tasks.deps import wiring
from wallet.commands import COMMANDS
from wallet.errors import ChainDataInvalid, ChainIdMismatch, ChainUnavailable, CustodyError, WalletError

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


# ---- commands taken from Kafka, until their task has run to an end (wallet/state/accepted.py)
COMMAND_TASKS = frozenset(spec.task for spec in COMMANDS.values())


@task_prerun.connect
def touch_accepted(sender=None, task_id: str | None = None, **_: object) -> None:
    """A run started: the command's message was not lost (a retry or redelivery counts too)."""
    if sender is not None and sender.name in COMMAND_TASKS and task_id:
        _quietly(lambda: wiring().accepted.touch(task_id))


@task_success.connect
def finish_accepted(sender=None, **_: object) -> None:
    if sender is not None and sender.name in COMMAND_TASKS:
        _quietly(lambda: wiring().accepted.finish(sender.request.id))


@task_failure.connect
def finish_failed_accepted(sender=None, task_id: str | None = None, exception: BaseException | None = None,
                           **_: object) -> None:
    """A failure the domain decided (refused, invalid: reported on `errors`) ends the command. Any
    other (Redis or the broker gone, so not even its retry could be published) leaves it to be
    published again."""
    if sender is not None and sender.name in COMMAND_TASKS and task_id and isinstance(exception, WalletError):
        _quietly(lambda: wiring().accepted.finish(task_id))


def _quietly(write) -> None:
    # Redis down: the record stays, and at worst an answered command is published again, which
    # its task's idempotency makes harmless. Never fail a task over its bookkeeping.
    try:
        write()
    except Exception as exc:  # noqa: BLE001
        log.warning("accepted-command bookkeeping skipped: %s", type(exc).__name__)
