"""`deposit.seen` events as they arrive on Kafka, with their arrival times: what stops the system
run's clock, and the far end of the deposit latency."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson

from wallet_client import ClientConfig, EventReader

TOPIC = "transaction"
# Latency is measured to the moment a poll returns the event: the broker must answer a fetch as
# soon as it has anything (kafka-python waits up to 500 ms by default), and a poll takes all there is.
LOW_LATENCY = {"fetch_max_wait_ms": 20, "max_poll_records": 5000}
READ_FOR_SECONDS = 7 * 24 * 3600.0  # until closed


class DepositListener:
    """Reads `transaction` from its beginning in a thread, with wallet_client's EventReader, and
    remembers when each deposit.seen (and each tx hash's first) arrived, on this process's
    perf_counter."""

    def __init__(self, bootstrap: str) -> None:
        self._reader = EventReader(ClientConfig(kafka_bootstrap=bootstrap), [TOPIC], from_beginning=True,
                                   consumer_options=LOW_LATENCY)
        self.lock = threading.Lock()
        self.events: list[tuple[float, dict[str, Any]]] = []  # (arrival, payload) of every deposit.seen
        self.by_tx: dict[str, float] = {}
        self.messages = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for records in self._reader.polls(READ_FOR_SECONDS):
                if self._stop.is_set():
                    return
                now = time.perf_counter()
                for record in records:
                    event = orjson.loads(record.value) if record.value else {}
                    with self.lock:
                        self.messages += 1
                        if event.get("type") == "deposit.seen":
                            payload = event["payload"]
                            self.events.append((now, payload))
                            self.by_tx.setdefault(payload["tx_hash"], now)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc

    def seen(self, since: float = 0.0, heights: tuple[int, int] | None = None) -> tuple[int, int, float]:
        """(distinct deposit ids, events, last arrival) of deposit.seen events arrived after
        `since`, of blocks within `heights` if given."""
        if self.error:
            raise RuntimeError(f"kafka listener failed: {self.error!r}")
        with self.lock:
            chosen = [
                (t, p)
                for t, p in self.events
                if t >= since and (heights is None or heights[0] <= p["block_number"] <= heights[1])
            ]
        return (
            len({p["deposit_id"] for _, p in chosen}),
            len(chosen),
            max((t for t, _ in chosen), default=0.0),
        )

    def arrival(self, tx_hash: str) -> float | None:
        with self.lock:
            return self.by_tx.get(tx_hash)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._reader.close()

    def __enter__(self) -> DepositListener:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
