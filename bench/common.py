"""What every benchmark does around its measurement: a stack of its own, and its results saved."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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
    """Counts messages on `topic` from the moment it is made, so a clock can stop when the last
    expected event is on Kafka. Reads with wallet_client's EventReader, as any consumer would."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from wallet_client import ClientConfig, EventReader

        self._reader = EventReader(ClientConfig(kafka_bootstrap=bootstrap), [topic])

    def wait_for(self, expected: int, *needles: bytes, timeout: float = 600.0) -> None:
        """Until `expected` messages containing every needle have arrived (counted as they are
        read: the broker's end offsets say nothing reliable).

        Raises:
            RuntimeError: fewer arrived within `timeout`.
        """
        seen = 0
        try:
            for records in self._reader.polls(timeout):
                seen += sum(1 for r in records if r.value and all(n in r.value for n in needles))
                if seen >= expected:
                    break
        finally:
            self._reader.close()
        if seen < expected:
            raise RuntimeError(f"only {seen} of {expected} events arrived")
