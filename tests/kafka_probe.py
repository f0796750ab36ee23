"""Reading and writing the test broker the way a platform consumer would: messages are read with
wallet_client's EventReader, the one reader of the product, the benches and the tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer

from wallet_client import ClientConfig, EventReader

END_OF_TOPIC = "test.end_of_topic"  # a marker of the tests' own, ending a read "up to now"


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
        self._config = ClientConfig(kafka_bootstrap=bootstrap)  # the tests name topics in full: no prefix
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")

    def send(self, topic: str, value: bytes | dict[str, Any], key: bytes | None = None) -> None:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        self._producer.send(topic, value=raw, key=key).get(timeout=15)

    def read_all(self, topic: str, until: Callable[[list[Message]], bool], timeout: float = 30.0
                 ) -> list[Message]:
        """Every message of `topic` from the start, read until `until(messages)` holds or time is up.

        Counts what it reads: Tansu's end offsets are not to be trusted.
        """
        messages: list[Message] = []
        with EventReader(self._config, [topic], from_beginning=True) as reader:
            for records in reader.polls(timeout):
                messages += [Message(topic=r.topic, key=r.key.decode() if r.key else None, value=r.value or b"",
                                     headers=dict(r.headers)) for r in records]
                if until(messages):
                    break
        return messages

    def events(self, topic: str, match: Callable[[dict[str, Any]], bool], count: int = 1,
               timeout: float = 30.0) -> list[dict[str, Any]]:
        """Events on `topic` for which `match` holds, once at least `count` are there (or time is up)."""
        def matching(messages: list[Message]) -> list[dict[str, Any]]:
            return [m.event for m in messages if _safe(match, m)]

        messages = self.read_all(topic, lambda ms: len(matching(ms)) >= count, timeout)
        return matching(messages)

    def so_far(self, topic: str) -> list[dict[str, Any]]:
        """Every event on `topic` until now: a marker this probe writes ends the read, no waiting
        (the tests' topics have one partition, so everything before the marker is read before it).

        Proves absence only after a positive marker from the system (an event it made after the
        point in question): the system may still be working on what comes before it. Not for the
        `command` topic, where the marker would be read as a command.
        """
        token = uuid.uuid4().hex
        self.send(topic, {"type": END_OF_TOPIC, "token": token})

        def is_end(message: Message) -> bool:
            try:
                return message.event.get("token") == token
            except ValueError:
                return False

        messages = self.read_all(topic, lambda ms: any(is_end(m) for m in ms))
        assert any(is_end(m) for m in messages), f"could not read {topic} to its end"
        events = []
        for message in messages:
            try:
                event = message.event
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("type") != END_OF_TOPIC:
                events.append(event)
        return events

    def close(self) -> None:
        self._producer.close()


def _safe(match: Callable[[dict[str, Any]], bool], message: Message) -> bool:
    try:
        return bool(match(message.event))
    except (ValueError, KeyError, TypeError):
        return False
