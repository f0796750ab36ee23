"""Block scanning's domain code driven in this process, under scratch key prefixes that leave the
measured deployment alone: where one block's time goes, and a what-if without a task per height.

Public APIs only: RpcClient.batch / fetch_blocks, the mappers, DepositScanner.process_block(s) and
the per-height lock (Locks.block). The scanner's recording step alone is not public, so it is not timed on
its own: `process_block_beyond_fetch` (process_block's mean less fetch_blocks') is what finding,
the lock and recording cost together.
"""

from __future__ import annotations

import queue
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import redis

from bench.blocks.knobs import PREFIX, REQUIRED_CONFIRMATIONS
from bench.common import chunked
from wallet.chain import mappers
from wallet.settings import Settings
from wallet.state.deposits import DepositBook
from wallet.state.keyspace import Keyspace
from wallet.wiring import Wiring
from workers.devstack import Stack

SCRATCH_PROFILE = f"{PREFIX}prof"
SCRATCH_BATCHED = f"{PREFIX}batch"


def scratch_wiring(stack: Stack, key_prefix: str) -> Wiring:
    """Domain objects on the stack's servers under `key_prefix`, watching what the first
    deployment watches. Fetches one chunk at a time (no fetch-ahead pool): the callers size the
    fetches themselves."""
    wiring = Wiring(Settings(
        redis_url=stack.redis_url, eth_rpc_url=stack.rpc_url, chain_id=stack.config.chain_id,
        key_prefix=key_prefix, trace_internal_transfers=False, scan_fetch_parallelism=1,
        required_confirmations=REQUIRED_CONFIRMATIONS,
    ))
    DepositBook(wiring.redis, wiring.keyspace).watch_as(Keyspace(PREFIX))
    return wiring


def drop_keys(client: redis.Redis, key_prefix: str) -> None:
    """Every key of a scratch deployment."""
    keys = list(client.scan_iter(Keyspace(key_prefix).everything, count=10_000))
    for chunk in chunked(keys, 1000):
        client.delete(*chunk)


def timed(fn: Callable[[int], object], height: int) -> float:
    started = time.perf_counter()
    fn(height)
    return time.perf_counter() - started


def profile_block(stack: Stack, heights: list[int]) -> dict[str, dict[str, float]]:
    """Where one process_block's time goes (ms per block, mean and median over `heights[1:]`;
    the first warms connections and token metadata): JSON-RPC round trip + decode, mapping to the
    model, the whole fetch, the per-height Redis lock, and process_block itself on heights not
    recorded yet."""
    w = scratch_wiring(stack, SCRATCH_PROFILE)
    rpc = w.rpc
    w.scanner.process_block(heights[0])
    timings: dict[str, list[float]] = {"rpc": [], "map": [], "fetch_blocks": [], "lock": []}
    for h in heights[1:]:
        t0 = time.perf_counter()
        block, receipts = (a["result"] for a in rpc.batch(
            [("eth_getBlockByNumber", [hex(h), True]), ("eth_getBlockReceipts", [hex(h)])]))
        t1 = time.perf_counter()
        mappers.block_bundle(block, receipts, None)
        t2 = time.perf_counter()
        rpc.fetch_blocks([h], with_traces=False)
        t3 = time.perf_counter()
        with w.locks.block(h):
            pass
        t4 = time.perf_counter()
        timings["rpc"].append(t1 - t0)
        timings["map"].append(t2 - t1)
        timings["fetch_blocks"].append(t3 - t2)
        timings["lock"].append(t4 - t3)
    # The whole domain call, on heights this scratch deployment has not recorded yet.
    timings["process_block"] = [timed(w.scanner.process_block, h) for h in heights[1:]]
    drop_keys(w.redis, SCRATCH_PROFILE)
    profile = {name: {"mean_ms": 1000 * statistics.fmean(v), "p50_ms": 1000 * statistics.median(v)}
               for name, v in timings.items()}
    profile["process_block_beyond_fetch"] = {
        "mean_ms": profile["process_block"]["mean_ms"] - profile["fetch_blocks"]["mean_ms"]}
    return profile


def batched_in_process(stack: Stack, heights: list[int], threads: int = 2,
                       per_fetch: int = 25) -> dict[str, float]:
    """What the same domain code reaches without a task per height: `threads` threads, each
    scanning `per_fetch` heights at a time (DepositScanner.process_blocks: one JSON-RPC fetch for
    the chunk, then each block found, locked and recorded). A what-if, not the system."""
    wirings = [scratch_wiring(stack, SCRATCH_BATCHED) for _ in range(threads)]
    for w in wirings:
        w.scanner.process_block(heights[0])  # warm
    work: queue.Queue[Sequence[int]] = queue.Queue()
    for chunk in chunked(heights[1:], per_fetch):
        work.put(chunk)

    def scan(w: Wiring) -> None:
        while True:
            try:
                chunk = work.get_nowait()
            except queue.Empty:
                return
            w.scanner.process_blocks(list(chunk))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(scan, wirings))
    seconds = time.perf_counter() - started
    drop_keys(wirings[0].redis, SCRATCH_BATCHED)
    return {
        "threads": threads,
        "heights_per_fetch": per_fetch,
        "blocks": len(heights) - 1,
        "blocks_per_s": (len(heights) - 1) / seconds,
    }
