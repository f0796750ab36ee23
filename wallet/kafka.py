"""Kafka adapters: the outbox publisher, topic creation, and client settings shared by all clients.

Works with Apache Kafka and with Tansu (the dev/test broker). Tansu needs topics created before the
first produce; creating them up front is harmless on Kafka too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from wallet.events import ALL_TOPICS
from wallet.outbox import OutboxEntry
from wallet.settings import Settings

log = logging.getLogger(__name__)



def client_config(settings: Settings) -> dict[str, Any]:
    """Connection and security settings every Kafka client of ours uses (SASL/TLS pass through)."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            config["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile:
        config["ssl_cafile"] = settings.kafka_ssl_cafile
    return config


def topic_name(settings: Settings, logical: str) -> str:
    return f"{settings.kafka_topic_prefix}{logical}"


def topic_configs(settings: Settings) -> dict[str, str]:
    """Per-topic settings our topics are created with (only what is set: Tansu, the dev broker,
    keeps no replicas and takes the broker's defaults)."""
    configs = {}
    if settings.kafka_min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(settings.kafka_min_insync_replicas)
    return configs


def ensure_topics(settings: Settings) -> list[str]:
    """Create our topics if they are missing (WALLET_KAFKA_PARTITIONS, _REPLICATION_FACTOR and
    _MIN_INSYNC_REPLICAS); returns the ones it created.

    An existing topic is left as it is, even with fewer partitions than configured: adding
    partitions moves keys to other partitions, so one address's new events could overtake its
    older ones still unread. That is an operator's step (kafka-topics.sh --alter, between
    consumers draining and resuming), never a side effect of a start.
    """
    admin = KafkaAdminClient(**client_config(settings))
    try:
        existing = set(admin.list_topics())
        missing = [topic_name(settings, t) for t in ALL_TOPICS if topic_name(settings, t) not in existing]
        created = []
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, settings.kafka_partitions, settings.kafka_replication_factor,
                                              topic_configs=topic_configs(settings))])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process won the race
        return created
    finally:
        admin.close()


class KafkaPublisher:
    """Forwards outbox entries with acks=all; reports how many leading entries the broker acknowledged.

    Not Kafka's idempotent producer: kafka-python's stays wedged after a batch expires (seen
    against a paused broker: producer id reset to -1, every later flush timing out), while a plain
    producer with one request in flight keeps order and recovers the moment the broker answers.
    The duplicates a retry may write carry the same event_id, which consumers drop.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._flush_seconds = settings.kafka_delivery_timeout_ms / 1000 + 1
        self._producer: KafkaProducer | None = None
        # Relays are serialized by a Redis lock, but a lease can lapse: never interleave two batches.
        self._serial = threading.Lock()

    def _new_producer(self) -> KafkaProducer:
        delivery_ms = self._settings.kafka_delivery_timeout_ms
        return KafkaProducer(
            **client_config(self._settings),
            acks="all",
            enable_idempotence=False,
            max_in_flight_requests_per_connection=1,
            linger_ms=2,
            # kafka-python requires delivery >= linger + request timeout.
            request_timeout_ms=delivery_ms // 2,
            delivery_timeout_ms=delivery_ms,
            max_block_ms=delivery_ms,
        )

    def publish(self, entries: Sequence[OutboxEntry]) -> int:
        with self._serial:
            try:
                if self._producer is None:
                    self._producer = self._new_producer()
            except KafkaError as exc:
                log.warning("kafka unavailable: %s", exc)
                return 0
            return self._send_all(self._producer, entries)

    def _send_all(self, producer: KafkaProducer, entries: Sequence[OutboxEntry]) -> int:
        futures = []
        try:
            for entry in entries:
                futures.append(
                    producer.send(
                        topic_name(self._settings, entry.topic),
                        key=entry.key.encode() if entry.key else None,
                        value=entry.value,
                        headers=[("event_id", entry.event_id.encode())],
                    )
                )
        except KafkaError as exc:
            # send() itself gave up (no metadata within max_block_ms): what was queued still counts.
            log.warning("kafka send failed after %d of %d entries: %s", len(futures), len(entries), exc)
        try:
            producer.flush(timeout=self._flush_seconds)
        except KafkaError as exc:
            log.warning("kafka flush did not complete: %s", exc)
        acked = 0
        for future in futures:
            if not (future.is_done and future.succeeded()):
                if future.is_done:
                    log.warning("kafka rejected an event: %s", future.exception)
                break
            acked += 1
        return acked

    def close(self) -> None:
        with self._serial:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
