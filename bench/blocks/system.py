"""The system's scan of the generated blocks, timed: worker and bridge started, then beat (the
clock starts); it stops when the watermark reaches the last block AND every expected `deposit.seen`
was read back from Kafka. Also how a later run gets a deployment of its own on the same servers."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis

from bench.blocks.deposit_listener import DepositListener
from bench.blocks.knobs import PREFIX, SYSTEM_TIMEOUT
from bench.common import chunked
from bench.cpu import cpu_per_block, cpu_seconds, cpu_share
from wallet.state.blocks import BlockLedger
from wallet.state.deposits import DepositBook
from wallet.state.keyspace import Keyspace
from workers.devstack import Stack

SYSTEM_PROCESSES = ("worker", "bridge", "beat")
# Catching up, the scheduler hands out groups of heights (process_blocks), one height otherwise.
_TASK_DONE = re.compile(r"Task tasks\.blocks\.process_blocks?\[[^\]]+\] succeeded in ([0-9.]+)s")


def add_watched(client: redis.Redis, key_prefix: str, addresses: list[bytes]) -> float:
    """Put `addresses` in the deployment's watched set; returns the seconds it took."""
    started = time.perf_counter()
    book = DepositBook(client, Keyspace(key_prefix))
    for chunk in chunked(addresses, 10_000):
        book.watch("0x" + a.hex() for a in chunk)
    return time.perf_counter() - started


def next_deployment(stack: Stack, r: redis.Redis, suffix: str, watched: list[bytes],
                    env: dict[str, str]) -> None:
    """Stop the system's processes and set up another deployment on the same infrastructure and
    chain: fresh key prefix (fresh state and Celery queues), the same watched addresses, `env` on
    top of the untraced scan."""
    for name in SYSTEM_PROCESSES:
        stack.stop(name)
        # Readiness is read from the log: start the new processes on fresh ones.
        log = stack.logs / f"{name}.log"
        if log.exists():
            log.rename(stack.logs / f"{name}.{stack.config.key_prefix}.log")
    stack.config.key_prefix = PREFIX + suffix
    stack.config.extra_env.update({"WALLET_TRACE_INTERNAL_TRANSFERS": "false", **env})
    add_watched(r, stack.config.key_prefix, watched)


def kick_relay(stack: Stack) -> None:
    """Start the bridge's relay now, as it runs in steady state (beat's watchdog would only send the
    first one BRIDGE_INTERVAL after it starts)."""
    from celery import Celery

    app = Celery("bench", broker=stack.redis_url, set_as_current=False)
    app.conf.broker_transport_options = {
        "visibility_timeout": 3600, "global_keyprefix": Keyspace(stack.config.key_prefix).celery_prefix}
    app.send_task("tasks.bridge.relay_outbox", queue="bridge")
    app.close()


def log_size(stack: Stack, name: str) -> int:
    path = stack.logs / f"{name}.log"
    return len(path.read_text(errors="replace")) if path.exists() else 0


def task_stats(stack: Stack, offset: int = 0) -> dict[str, Any]:
    """Block tasks the worker logged since `offset`: how many, and their run times."""
    text = (stack.logs / "worker.log").read_text(errors="replace")[offset:]
    times = sorted(float(m) for m in _TASK_DONE.findall(text))
    if not times:
        return {"tasks": 0}
    return {
        "tasks": len(times),
        "sum_s": sum(times),
        "mean_ms": 1000 * statistics.fmean(times),
        "p50_ms": 1000 * times[len(times) // 2],
        "p99_ms": 1000 * times[min(len(times) - 1, int(len(times) * 0.99))],
    }


def run_system(
    stack: Stack,
    listener: DepositListener,
    r: redis.Redis,
    expected: int,
    heights: tuple[int, int],
    after_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Start worker + bridge, then beat (clock starts); stop the clock when the watermark reaches
    the last of `heights` and every expected deposit.seen of `heights` was read from Kafka.
    `after_start` runs after each start (pinning the new processes)."""
    last = heights[1]
    ledger = BlockLedger(r, Keyspace(stack.config.key_prefix))
    worker_log_offset = log_size(stack, "worker")
    stack.start(["worker", "bridge"])
    if after_start is not None:
        after_start()
    kick_relay(stack)
    cpu_before = cpu_seconds(stack)
    started = time.perf_counter()
    stack.start(["beat"])
    if after_start is not None:
        after_start()
    beat_ready = time.perf_counter() - started
    watermark_at = None
    deadline = time.monotonic() + SYSTEM_TIMEOUT
    while True:
        wm = ledger.watermark()
        now = time.perf_counter()
        if watermark_at is None and wm is not None and wm >= last:
            watermark_at = now
        distinct, events, last_event = listener.seen(started, heights)
        if watermark_at is not None and distinct >= expected:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"system did not finish in {SYSTEM_TIMEOUT:.0f}s: watermark {wm!r} of {last}, "
                f"{distinct} of {expected} deposits\n{stack.tail('worker')}"
            )
        for name in SYSTEM_PROCESSES:
            if not stack.alive(name):
                raise RuntimeError(f"{name} died:\n{stack.tail(name)}")
        time.sleep(0.02)
    cpu_after = cpu_seconds(stack)
    seconds = max(watermark_at, last_event) - started
    if distinct != expected:
        raise RuntimeError(f"{distinct} deposit events arrived, {expected} expected")
    blocks = heights[1] - heights[0] + 1
    tasks = task_stats(stack, worker_log_offset)
    # Beat's own start-up (importing the app) is inside `seconds`; this rate leaves it out.
    return {
        "seconds": seconds,
        "beat_ready_s": beat_ready,
        "blocks_per_s_after_beat_ready": blocks / (seconds - beat_ready),
        "watermark_s": watermark_at - started,
        "last_event_s": last_event - started,
        "blocks": blocks,
        "blocks_per_s": blocks / seconds,
        "deposit_events_distinct": distinct,
        "deposit_events_total": events,
        "worker_tasks": tasks,
        "cores_used": cpu_share(cpu_before, cpu_after, time.perf_counter() - started),
        "cpu_ms_per_block": cpu_per_block(cpu_before, cpu_after, blocks),
    }


def expected_deposits(expected: dict[str, int], heights: list[int]) -> int:
    """Deposits of the chain (tx hash -> block) within `heights`."""
    return sum(1 for h in expected.values() if heights[0] <= h <= heights[-1])
