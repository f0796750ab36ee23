"""Reading and writing the test broker the way a platform consumer would."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


@dataclass(frozen=True)
class Message:
    topic: str
    key: str | None
    value: bytes
    headers: dict[str, bytes]

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.value)


class KafkaProbe:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")

    def send(self, topic: str, value: bytes | dict[str, Any], key: bytes | None = None) -> None:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        self._producer.send(topic, value=raw, key=key).get(timeout=15)

    def read_all(self, topic: str, until: Callable[[list[Message]], bool], timeout: float = 30.0
                 ) -> list[Message]:
        """Every message of `topic` from the start, read until `until(messages)` holds or time is up.

        Counts what it reads: Tansu's end offsets are not to be trusted.
        """
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    for r in records:
                        messages.append(Message(
                            topic=r.topic, key=r.key.decode() if r.key else None, value=r.value,
                            headers={k: v for k, v in (r.headers or [])},
                        ))
                if until(messages):
                    break
        finally:
            consumer.close()
        return messages

    def events(self, topic: str, match: Callable[[dict[str, Any]], bool], count: int = 1,
               timeout: float = 30.0) -> list[dict[str, Any]]:
        """Events on `topic` for which `match` holds, once at least `count` are there (or time is up)."""
        def matching(messages: list[Message]) -> list[dict[str, Any]]:
            return [m.event for m in messages if _safe(match, m)]

        messages = self.read_all(topic, lambda ms: len(matching(ms)) >= count, timeout)
        return matching(messages)

    def close(self) -> None:
        self._producer.close()


def _safe(match: Callable[[dict[str, Any]], bool], message: Message) -> bool:
    try:
        return bool(match(message.event))
    except (ValueError, KeyError, TypeError):
        return False
