"""Reading the system's output topics as the platform does, all run long: every event kept in order.

One reader thread follows `transaction`, `address.created` and `errors` from their beginning with
wallet_client's EventReader; it survives the broker pausing or its host being cut off by opening a
new reader at the offsets after the last records it took.
`read_to_end` proves the reader has everything up to now with a marker of its own (Tansu's end
offsets are not to be trusted).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer

from wallet_client import ClientConfig, EventReader
from wallet_client.kafka_client import Partition

TOPICS = ("transaction", "address.created", "errors")
MARKER_TYPE = "chaos.end_of_topic"
log = logging.getLogger("chaos.topics")


class TopicFollower:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.events: dict[str, list[dict[str, Any]]] = {t: [] for t in TOPICS}
        # The next offset to read of each partition (the topics have one). Every one is named from the
        # start, so a reader reopened while the broker is paused has no start or end to look up.
        self._offsets: dict[Partition, int] = {(t, 0): 0 for t in TOPICS}
        self._markers: set[str] = set()
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-follower", daemon=True)

    def on_event(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def snapshot(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events[topic])

    def _run(self) -> None:
        config = ClientConfig(kafka_bootstrap=self.bootstrap)  # the chaos stack's topics have no prefix
        while not self._stop.is_set():
            reader = None
            try:
                reader = EventReader(config, TOPICS, from_beginning=True, start_offsets=self._offsets)
                for records in reader.polls(float("inf")):
                    if self._stop.is_set():
                        break
                    for record in records:
                        self._take(record.topic, record.value)
                        self._offsets[(record.topic, record.partition)] = record.offset + 1
            except Exception as exc:  # noqa: BLE001 - the broker paused or cut off: reconnect and go on
                log.debug("topic reader reconnecting: %s", exc)
                self._stop.wait(1.0)
            finally:
                if reader is not None:
                    # Closing a consumer of an unreachable broker may fail: nothing to do about it.
                    with contextlib.suppress(Exception):
                        reader.close()

    def _take(self, topic: str, raw: bytes | None) -> None:
        try:
            event = json.loads(raw or b"")
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if event.get("type") == MARKER_TYPE:
            with self._lock:
                self._markers.add(str(event.get("token")))
            return
        with self._lock:
            self.events[topic].append(event)
        for listener in self._listeners:
            listener(topic, event)

    def read_to_end(self, timeout: float = 60.0) -> bool:
        """Whether every event written to the topics before this call has been read."""
        tokens = {topic: uuid.uuid4().hex for topic in TOPICS}
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        try:
            for topic, token in tokens.items():
                producer.send(topic, json.dumps({"type": MARKER_TYPE, "token": token}).encode()).get(timeout=15)
        finally:
            producer.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if set(tokens.values()) <= self._markers:
                    return True
            time.sleep(0.1)
        return False
