"""Deposit scanning under faults: a worker killed mid-block, the node unreachable, downtime."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from tests.chain_helpers import Chain
from tests.kafka_probe import KafkaProbe
from wallet.state.blocks import BlockLedger
from wallet.state.keyspace import Keyspace
from wallet.state.locks import BLOCK_LOCK_SECONDS, SCHEDULER_LOCK_SECONDS, Locks
from workers.devstack import Stack, wait_for

PREFIX = "wtest"
KS = Keyspace(PREFIX)


def at_least(client: redis.Redis, height: int) -> bool:
    """Whether the watermark has reached `height`."""
    watermark = BlockLedger(client, KS).watermark()
    return watermark is not None and watermark >= height


def seen(kafka: KafkaProbe, to: str, count: int = 1, timeout: float = 60):
    return kafka.events("transaction", lambda e: e["type"] == "deposit.seen" and e["payload"]["to"] == to,
                        count, timeout)


def _active_process_block(celery_app, height: int) -> dict | None:
    for tasks in (celery_app.control.inspect(timeout=1).active() or {}).values():
        for task in tasks:
            if task["name"] == "tasks.blocks.process_block" and list(task["args"]) == [height]:
                return task
    return None


@pytest.mark.parametrize("victim", ["pool-child", "whole-worker"])
def test_worker_killed_while_processing_a_block_loses_nothing(
    victim: str, stack: Stack, chain: Chain, kafka: KafkaProbe, redis_client: redis.Redis,
    new_address, celery_app,
) -> None:
    to = new_address()
    # No backlog first: a height scanned together with earlier ones goes to process_blocks, and
    # this test waits for the single-height task the tip gets.
    head = chain.head()
    wait_for(lambda: at_least(redis_client, head), 60, "the scanner at the head")
    height = head + 1
    # Holding the block's lock parks the worker inside process_block(height), after its fetch.
    block_lock = Locks(redis_client, KS).block(height, lease_seconds=120)
    assert block_lock.acquire(blocking=False)
    try:
        receipt = chain.send_eth(to, 4242)
        assert receipt["blockNumber"] == height
        active: dict = {}
        wait_for(lambda: bool(active.update(_active_process_block(celery_app, height) or {}) or active),
                 30, f"a worker to be inside process_block({height})")
        if victim == "pool-child":
            os.kill(active["worker_pid"], signal.SIGKILL)
        else:
            stack.kill("worker")
    finally:
        block_lock.release()
    if victim == "whole-worker":
        stack.start(["worker"])

    [event] = seen(kafka, to, timeout=90)
    assert event["payload"]["amount"] == "4242"
    # Exactly once, and the watermark went past the block: nothing was skipped.
    wait_for(lambda: at_least(redis_client, height), 60, "the watermark")
    assert len([e for e in kafka.so_far("transaction") if e["type"] == "deposit.seen"
                and e["payload"]["to"] == to]) == 1


def test_a_block_lock_left_by_a_lost_acquire_stalls_its_height_only_briefly(
    stack: Stack, chain: Chain, kafka: KafkaProbe, redis_client: redis.Redis, new_address,
) -> None:
    """Found by the chaos run: Redis paused while a block task took its height's lock, the SET
    landed but its reply never came, so the lock was held by nobody for its whole lease (120 s) and
    the watermark stood still. The lease now covers only Redis work: such a lock costs seconds."""
    to = new_address()
    head = chain.head()
    wait_for(lambda: at_least(redis_client, head), 60, "the scanner at the head")
    height = head + 1
    # What the lost acquire leaves: the lock set, under a token no process knows.
    assert Locks(redis_client, KS).block(height).acquire(blocking=False, token="lost-reply-token")
    started = time.monotonic()
    receipt = chain.send_eth(to, 4343)
    assert receipt["blockNumber"] == height
    [event] = seen(kafka, to, timeout=BLOCK_LOCK_SECONDS + 45)
    assert event["payload"]["amount"] == "4343"
    assert time.monotonic() - started < BLOCK_LOCK_SECONDS + 30


def test_a_scheduler_lock_left_by_a_dead_tick_stalls_scanning_only_briefly(
    stack: Stack, chain: Chain, kafka: KafkaProbe, redis_client: redis.Redis, new_address,
) -> None:
    """Found by the chaos run: Redis killed mid-tick, the scheduler's release never reached it, and
    no height was handed out for the lock's 60 s lease. The lease is now short."""
    to = new_address()
    head = chain.head()
    wait_for(lambda: at_least(redis_client, head), 60, "the scanner at the head")
    # What the dead tick leaves: the lock set, under a token no process knows, for its whole lease.
    dead_tick = Locks(redis_client, KS).scheduler()
    wait_for(lambda: dead_tick.acquire(blocking=False, token="dead-tick-token"), 10, "the scheduler lock")
    started = time.monotonic()
    chain.send_eth(to, 4444)
    [event] = seen(kafka, to, timeout=SCHEDULER_LOCK_SECONDS + 45)
    assert event["payload"]["amount"] == "4444"
    assert time.monotonic() - started < SCHEDULER_LOCK_SECONDS + 30


def test_node_unreachable_one_error_then_catch_up(
    stack: Stack, chain: Chain, kafka: KafkaProbe, new_address
) -> None:
    since = time.time()
    stack.send_signal("node", signal.SIGSTOP)
    try:
        [outage] = kafka.events(
            "errors", lambda e: e["type"] == "chain.unavailable"
            and e["occurred_at"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since - 1)), timeout=60)
    finally:
        stack.send_signal("node", signal.SIGCONT)
    [recovered] = kafka.events("errors", lambda e: e["type"] == "chain.recovered"
                               and e["payload"]["since"] == outage["payload"]["since"], timeout=60)
    assert recovered
    to = new_address()
    chain.send_eth(to, 777)
    assert seen(kafka, to)[0]["payload"]["amount"] == "777"
    # Announced once for the whole outage, not once per failed tick.
    outages = [e for e in kafka.so_far("errors") if e["type"] == "chain.unavailable"
               and e["payload"]["since"] == outage["payload"]["since"]]
    assert len(outages) == 1


def test_downtime_catch_up_from_the_watermark_without_gaps(
    stack: Stack, chain: Chain, kafka: KafkaProbe, new_address
) -> None:
    addresses = [new_address() for _ in range(4)]
    stack.stop("beat")
    stack.stop("worker")
    try:
        for i, to in enumerate(addresses):
            chain.send_eth(to, 1000 + i)
            chain.mine(3)  # empty blocks between: the scanner must walk every height
    finally:
        stack.start(["worker", "beat"])
    for i, to in enumerate(addresses):
        assert seen(kafka, to)[0]["payload"]["amount"] == str(1000 + i)
