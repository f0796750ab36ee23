"""The relay's ordering and deletion rules, on a real Redis stream, with a publisher that fails on cue
(our own Publisher interface, not a stand-in for Kafka: the Kafka path is covered in test_faults)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

import redis

from wallet.bridge import relay_once, run_relay
from wallet.events import address_created_event
from wallet.outbox import STREAM_START, Outbox, OutboxEntry
from wallet.state.keyspace import Keyspace
from wallet.state.locks import Locks


class FlakyPublisher:
    def __init__(self, ack_limits: list[int]) -> None:
        self.ack_limits = ack_limits  # per call: how many leading entries the "broker" acknowledges
        self.delivered: list[str] = []

    def publish(self, entries: Sequence[OutboxEntry]) -> int:
        limit = self.ack_limits.pop(0) if self.ack_limits else len(entries)
        acked = entries[:limit]
        self.delivered += [e.event_id for e in acked]
        return len(acked)


def _outbox(client: redis.Redis, n: int) -> tuple[Outbox, list[str]]:
    outbox = Outbox(client, Keyspace(f"wtest-relay-{uuid.uuid4().hex[:8]}").outbox)
    ids = []
    pipe = client.pipeline()
    for i in range(n):
        event = address_created_event(1, f"0x{i:040x}", "r", i, n, {})
        outbox.append(pipe, event)
        ids.append(event.envelope.event_id)
    pipe.execute()
    return outbox, ids


def test_partial_ack_deletes_only_the_acknowledged_prefix_and_resends_in_order(redis_client) -> None:
    outbox, ids = _outbox(redis_client, 5)
    publisher = FlakyPublisher([2])

    sent, cursor, failed = relay_once(outbox, publisher, STREAM_START, 10, None)
    assert (sent, cursor, failed) == (2, STREAM_START, True)
    assert [e.event_id for e in outbox.entries()] == ids[2:]

    sent, cursor, failed = relay_once(outbox, publisher, cursor, 10, None)
    assert (sent, failed) == (3, False)
    assert publisher.delivered == ids
    assert len(outbox) == 0


class CountingPublisher(FlakyPublisher):
    def __init__(self) -> None:
        super().__init__([])
        self.batches: list[int] = []

    def publish(self, entries: Sequence[OutboxEntry]) -> int:
        self.batches.append(len(entries))
        return super().publish(entries)


def test_entries_written_during_the_linger_go_in_the_same_batch(redis_client) -> None:
    """A send writes its events milliseconds apart; the relay waits that long for more before it
    publishes, so both go in one batch (one produce, flush and delete), in order."""
    outbox, first = _outbox(redis_client, 1)
    later = address_created_event(1, "0x" + "ab" * 20, "r", 1, 2, {})
    publisher = CountingPublisher()
    timer = threading.Timer(0.02, lambda: outbox.append(redis_client, later))
    timer.start()
    sent, _, failed = relay_once(outbox, publisher, STREAM_START, 10, None, linger_ms=500)
    timer.join()
    assert (sent, failed, publisher.batches) == (2, False, [2])
    assert publisher.delivered == [*first, later.envelope.event_id] and len(outbox) == 0

    # Without a linger the second entry waits for the next batch.
    outbox, first = _outbox(redis_client, 1)
    publisher = CountingPublisher()
    timer = threading.Timer(0.02, lambda: outbox.append(redis_client, later))
    timer.start()
    relay_once(outbox, publisher, STREAM_START, 10, None)
    timer.join()
    assert publisher.batches == [1] and len(outbox) == 1


def test_run_relay_skips_when_another_relay_holds_the_lock(redis_client) -> None:
    outbox, _ = _outbox(redis_client, 1)
    locks = Locks(redis_client, Keyspace(f"wtest-relay-{uuid.uuid4().hex}"))
    held = locks.bridge(10)
    assert held.acquire(blocking=False)
    summary = run_relay(outbox, FlakyPublisher([]), locks.bridge(10), budget_seconds=0.5, batch_size=10)
    assert not summary.ran and len(outbox) == 1
    held.release()
    summary = run_relay(outbox, FlakyPublisher([]), locks.bridge(10), budget_seconds=0.5, batch_size=10)
    assert summary.ran and summary.forwarded == 1 and len(outbox) == 0


def test_height_groups_are_consecutive_runs_of_bounded_size() -> None:
    from wallet.deposits.scanner import height_groups

    assert height_groups([5, 1, 2, 3, 9, 10], 2) == [[1, 2], [3], [5], [9, 10]]
    assert height_groups(list(range(1, 8)), 3) == [[1, 2, 3], [4, 5, 6], [7]]
    assert height_groups([4], 25) == [[4]]
    assert height_groups([], 25) == []
