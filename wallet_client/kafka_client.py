"""Commands on Kafka: produce on `command`, read the reply on `address.created`, `transaction`
and `errors` by request id."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from wallet_client.config import ClientConfig
from wallet_client.errors import ReplyTimeout, TransportError
from wallet_client.models import Event, Reply
from wallet_client.registry import REPLY_TOPICS, TOPIC_COMMAND, command
from wallet_client.replies import ReplyCollector, Until, parse_event


def with_request_id(command_: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    """`command` with its request id first: a rejection echoes the start of the message, so the id
    is in the echo even when the rest is cut off."""
    rid = request_id or command_.get("request_id") or f"client-{uuid.uuid4()}"
    rest = {k: v for k, v in command_.items() if k not in ("type", "request_id")}
    return {"type": command_.get("type"), "request_id": rid, **rest}


@dataclass(frozen=True)
class Record:
    """One message as it was read, not decoded: for readers that want more than the events."""

    topic: str  # the logical name (without the configured prefix)
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


# A partition of a topic by its logical name (without the configured prefix), as Record names it.
Partition = tuple[str, int]


class EventReader:
    """Reads topics from where they end when it opens (or from their start): open it before
    producing, and every reply comes after that position.

    Whether a read is complete is for the caller to tell from what it read (a count, a marker):
    never from end offsets, which some brokers get wrong (Tansu answers the last batch's base + 1)."""

    def __init__(self, config: ClientConfig, topics: Sequence[str] = REPLY_TOPICS, *,
                 from_beginning: bool = False, start_offsets: Mapping[Partition, int] | None = None,
                 consumer_options: Mapping[str, Any] | None = None) -> None:
        """`start_offsets`: where to resume each partition named there, the offset of the next record
        to read (a reader reopened after the broker went away goes on from the last record it had,
        `Record.offset + 1`); partitions not named start at the end, or the start.

        `consumer_options`: more kafka-python KafkaConsumer options (a latency measurement wants
        a short `fetch_max_wait_ms`, say)."""
        self._config = config
        self._names = {config.topic(t): t for t in topics}
        self._consumer = KafkaConsumer(**config.kafka_options(), **(consumer_options or {}),
                                       enable_auto_commit=False)
        try:
            partitions = []
            for name in self._names:
                found = self._consumer.partitions_for_topic(name)
                if not found:
                    raise TransportError(f"topic {name} does not exist (create the topics first)",
                                         code="unknown_topic")
                partitions += [TopicPartition(name, p) for p in sorted(found)]
            self._consumer.assign(partitions)
            resumed = {tp: (start_offsets or {}).get((self._names[tp.topic], tp.partition)) for tp in partitions}
            fresh = [tp for tp, offset in resumed.items() if offset is None]
            if fresh and from_beginning:
                self._consumer.seek_to_beginning(*fresh)
            elif fresh:
                self._consumer.seek_to_end(*fresh)
            for tp, offset in resumed.items():
                if offset is not None:
                    self._consumer.seek(tp, offset)
            for tp in partitions:
                self._consumer.position(tp)  # resolve now: "the end" is before the request goes out
        except BaseException:
            self._consumer.close()
            raise

    def polls(self, timeout: float) -> Iterator[list[Record]]:
        """What each poll brought until `timeout` (an empty list when nothing came within 0.2 s), so
        the caller can check its condition after each one, and stop iterating once it holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            yield [Record(self._names[r.topic], r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
                   for records in self._consumer.poll(timeout_ms=200).values() for r in records]

    def events(self, timeout: float) -> Iterator[Event]:
        """Every event read until `timeout` (or until the caller stops iterating)."""
        for records in self.polls(timeout):
            for record in records:
                event = parse_event(record.value, record.topic, record.key)
                if event is not None:
                    yield event

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class KafkaClient:
    """Send commands on Kafka and wait for their replies.

        client = KafkaClient(ClientConfig.from_env())
        reply = client.request({"type": "create_account", "count": 2, "meta": {"user": 7}})
        reply.raise_for_rejection().addresses
    """

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._producer: KafkaProducer | None = None

    def produce(self, command_: dict[str, Any], *, topic: str = TOPIC_COMMAND) -> str:
        """Produce `command` (acks=all) keyed by its request id; returns the request id.

        The key spreads commands over `command`'s partitions and keeps a re-sent request on the
        partition of its first copy, behind it.
        """
        message = with_request_id(command_)
        try:
            if self._producer is None:
                self._producer = KafkaProducer(**self.config.kafka_options(), acks="all")
            self._producer.send(self.config.topic(topic), key=message["request_id"].encode(),
                                value=json.dumps(message).encode()).get(timeout=15)
        except KafkaError as exc:
            raise TransportError(f"Kafka did not take the command: {type(exc).__name__}") from None
        return message["request_id"]

    def reader(self, topics: Sequence[str] = REPLY_TOPICS, *, from_beginning: bool = False) -> EventReader:
        return EventReader(self.config, topics, from_beginning=from_beginning)

    def request(self, command_: dict[str, Any], *, timeout: float = 30.0, until: Until | None = None) -> Reply:
        """Produce `command` and read its reply; `reply.complete` says whether all of it came in time.
        `until(events)`: when the reply is complete (default: all addresses of a `create_account`,
        the first answer of anything else; submitted, held or failed for an outgoing request)."""
        message = with_request_id(command_)
        with self.reader() as reader:
            self.produce(message)
            return self.await_reply(reader, message, timeout=timeout, until=until)

    def await_reply(self, reader: EventReader, command_: dict[str, Any], *, timeout: float,
                    until: Until | None = None) -> Reply:
        spec = command(command_["type"])
        collector = ReplyCollector(command_["request_id"], spec, int(command_.get("count", 1) or 1), until)
        for event in reader.events(timeout):
            if collector.add(event):
                break
        return collector.reply

    def create_account(self, *, count: int = 1, meta: dict[str, Any] | None = None,
                       request_id: str | None = None, timeout: float = 30.0) -> list[str]:
        """The new addresses. Raises RequestRejected, or ReplyTimeout with the events that came."""
        reply = self.request({"type": "create_account", "request_id": request_id, "count": count,
                              "meta": meta or {}}, timeout=timeout).raise_for_rejection()
        if not reply.complete:
            raise ReplyTimeout(f"{len(reply.events)} of {count} addresses within {timeout}s", events=reply.events)
        return reply.addresses

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None

    def __enter__(self) -> KafkaClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
