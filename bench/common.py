"""What every benchmark does around its measurement: a stack of its own, and its results saved."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workers.devstack import Stack, StackConfig

RESULTS = Path(__file__).parent / "results"


@contextmanager
def bench_stack(key_prefix: str = "wbench") -> Iterator[Stack]:
    """A whole stack on free ports, this process pointed at it; stopped and removed afterwards
    (kept with BENCH_KEEP_STACK=1, for a look at its logs)."""
    home = Path(tempfile.mkdtemp(prefix="wallet-bench-"))
    stack = Stack(home, StackConfig.fresh(prefer_defaults=False, key_prefix=key_prefix))
    os.environ.update(stack.client_env())
    try:
        stack.start()
        yield stack
    finally:
        if os.environ.get("BENCH_KEEP_STACK") is None:
            stack.down()
            shutil.rmtree(home, ignore_errors=True)


def save_results(name: str, results: dict[str, Any]) -> None:
    text = json.dumps(results, indent=2)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(text)


class EventCounter:
    """Counts messages on partition 0 of `topic` from the moment it is made (the benches' topics
    have one partition), so a clock can stop when the last expected event is on Kafka."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        partition = TopicPartition(topic, 0)
        self._consumer.assign([partition])
        self._consumer.seek_to_end(partition)
        self._consumer.poll(timeout_ms=100)

    def wait_for(self, expected: int, *needles: bytes, timeout: float = 600.0) -> None:
        """Until `expected` messages containing every needle have arrived.

        Raises:
            RuntimeError: fewer arrived within `timeout`.
        """
        seen, deadline = 0, time.monotonic() + timeout
        try:
            while seen < expected and time.monotonic() < deadline:
                for records in self._consumer.poll(timeout_ms=200, max_records=5000).values():
                    seen += sum(1 for r in records if all(n in r.value for n in needles))
        finally:
            self._consumer.close()
        if seen < expected:
            raise RuntimeError(f"only {seen} of {expected} events arrived")
