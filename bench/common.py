"""What every benchmark does around its measurement: a stack of its own, and its results saved."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from workers.devstack import Stack, StackConfig

RESULTS = Path(__file__).parent / "results"
T = TypeVar("T")


@contextmanager
def bench_stack(key_prefix: str = "wbench", start: Sequence[str] | None = None) -> Iterator[Stack]:
    """A stack on free ports, this process pointed at it: every process, or only those in `start`
    (a bench that starts the rest itself, on its own clock). Stopped and removed afterwards; kept
    running with BENCH_KEEP_STACK=1, or stopped with its logs kept with BENCH_KEEP_LOGS=1."""
    home = Path(tempfile.mkdtemp(prefix="wallet-bench-"))
    stack = Stack(home, StackConfig.fresh(prefer_defaults=False, key_prefix=key_prefix))
    os.environ.update(stack.client_env())
    try:
        if start is None:
            stack.start()
        else:
            stack.start(start)
        yield stack
    finally:
        if os.environ.get("BENCH_KEEP_STACK") is None:
            stack.down()
            if os.environ.get("BENCH_KEEP_LOGS"):
                print(f"logs kept in {stack.logs}")
            else:
                shutil.rmtree(home, ignore_errors=True)


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in consecutive slices of `size` (the last one shorter)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def percentile(ordered: Sequence[float], p: float) -> float:
    """The `p`th percentile of sorted values, interpolated between the two nearest."""
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


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
