"""Reading the system's output topics as the platform does, all run long: every event kept in order.

One reader thread follows `transaction`, `address.created` and `errors` from their beginning; it
survives the broker pausing or its host being cut off by reconnecting from the last offset read.
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

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

TOPICS = ("transaction", "address.created", "errors")
MARKER_TYPE = "chaos.end_of_topic"
log = logging.getLogger("chaos.topics")


class TopicFollower:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.events: dict[str, list[dict[str, Any]]] = {t: [] for t in TOPICS}
        self._offsets = {t: 0 for t in TOPICS}
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
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
                partitions = [TopicPartition(t, 0) for t in TOPICS]
                consumer.assign(partitions)
                for tp in partitions:
                    consumer.seek(tp, self._offsets[tp.topic])
                while not self._stop.is_set():
                    for tp, records in consumer.poll(timeout_ms=300).items():
                        for record in records:
                            self._take(tp.topic, record.value)
                            self._offsets[tp.topic] = record.offset + 1
            except Exception as exc:  # noqa: BLE001 - the broker paused or cut off: reconnect and go on
                log.debug("topic reader reconnecting: %s", exc)
                self._stop.wait(1.0)
            finally:
                if consumer is not None:
                    # Closing a consumer of an unreachable broker may fail: nothing to do about it.
                    with contextlib.suppress(Exception):
                        consumer.close(autocommit=False)

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
