"""The Kafka command consumer: `python -m workers.command_consumer`.

Reads `command`, validates each message, and either enqueues the Celery task or records one
`command.rejected` event on `errors`. Offsets are committed only after every message of a poll was
handed on, so a crash re-reads rather than loses; the request id derived from the message's
position makes the re-read harmless.

Several consumers share `command` as one consumer group (WALLET_KAFKA_COMMAND_GROUP): each
partition is read by one of them at a time, in order. When partitions move (a consumer starts or
stops), a commit of the poll in hand can fail: its commands are then read again by the partition's
new owner, which is harmless for the same reason.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, RebalanceInProgressError

from tasks.deps import wiring
from wallet.commands import COMMANDS, meta_of, parse_command
from wallet.errors import InvalidCommand
from wallet.events import TOPIC_COMMAND
from wallet.kafka import client_config, ensure_topics, topic_name
from wallet.services.rejections import reject_command
from wallet.settings import Settings, get_settings
from workers.app import app

log = logging.getLogger("workers.command_consumer")


def request_id_of(record: ConsumerRecord) -> str:
    # The timestamp keeps ids unique when a topic is recreated and its offsets start again at 0.
    return f"kafka:{record.topic}:{record.partition}:{record.offset}:{record.timestamp}"


def handle(record: ConsumerRecord, settings: Settings) -> str:
    """Hand one command on. Returns what was done: 'enqueued' or the rejection code."""
    raw: bytes = record.value or b""
    request_id = request_id_of(record)
    source = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    try:
        command = parse_command(
            raw, max_bytes=settings.max_command_bytes, max_batch_count=settings.max_batch_count
        )
    except InvalidCommand as exc:
        w = wiring()
        reject_command(
            w.redis, w.keyspace, w.outbox, w.chain_id, request_id=request_id, error=exc,
            request=raw, meta=meta_of(raw, settings.max_command_bytes), source=source,
        )
        log.info("rejected command at %s: %s", source, exc.code)
        return exc.code
    request_id = command.request_id or request_id
    # Dispatch is the registry's: the task by name (routed to its queue by celeryconfig), with the
    # keyword arguments and task id the command's model gives.
    spec = COMMANDS[command.type]
    kwargs, task_id = command.task_call(request_id)
    if spec.read_only:
        kwargs["reply"] = True  # a read sent on Kafka is answered on Kafka
    # Its own id when the command names none (an approval): the message's place in the topic, so a
    # command read again after a crash is the same task.
    dispatch(spec.task, kwargs, task_id or request_id_of(record))
    return "enqueued"


def dispatch(task: str, kwargs: dict[str, Any], task_id: str) -> None:
    """Record the command's task, then publish it; both before the offset is committed, so a
    Celery message lost later is published again (wallet/state/accepted.py)."""
    wiring().accepted.accept(task_id, task, kwargs)
    app.send_task(task, kwargs=kwargs, task_id=task_id)


class _Assignment(ConsumerRebalanceListener):
    """Logs which partitions this consumer reads: operators (and tests) see the group share them."""

    def on_partitions_revoked(self, revoked) -> None:
        if revoked:
            log.info("command partitions revoked: %s", sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned) -> None:
        log.info("command partitions assigned: %s", sorted(tp.partition for tp in assigned))


def consume(settings: Settings, stop: threading.Event) -> None:
    ensure_topics(settings)
    consumer = KafkaConsumer(
        **client_config(settings),
        group_id=settings.kafka_command_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        session_timeout_ms=min(10_000, settings.kafka_max_poll_interval_ms),
        heartbeat_interval_ms=min(3_000, settings.kafka_max_poll_interval_ms // 3),
        # Oversized commands must reach us to be rejected, not stall the partition.
        max_partition_fetch_bytes=max(1 << 20, settings.max_command_bytes * 4),
    )
    consumer.subscribe([topic_name(settings, TOPIC_COMMAND)], listener=_Assignment())
    log.info("consuming %s as group %s", topic_name(settings, TOPIC_COMMAND), settings.kafka_command_group)
    try:
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=500, max_records=100)
            if not batch:
                continue
            for records in batch.values():
                for record in records:
                    _handle_until_done(record, settings, stop)
            try:
                consumer.commit()
            except (CommitFailedError, RebalanceInProgressError) as exc:
                # Partitions moved meanwhile: their new owner reads these commands again (same
                # request ids, so each is done once).
                log.info("offsets not committed (the group is rebalancing: %s); they are read again",
                         type(exc).__name__)
    finally:
        consumer.close()


def _handle_until_done(record: ConsumerRecord, settings: Settings, stop: threading.Event) -> None:
    """Redis (state or Celery broker) down: wait and try again; never skip a command."""
    delay = 0.2
    while True:
        try:
            handle(record, settings)
            return
        except Exception as exc:  # anything here is infrastructure: retried, never skipped
            if stop.is_set():
                raise
            log.warning("could not hand on command at offset %s (%s); retrying in %.1fs",
                        record.offset, type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consume(get_settings(), stop)


if __name__ == "__main__":
    main()
