"""The raw ceiling: the same blocks read as plainly as a client can, the baseline of every ratio.

Block (with transactions) + block receipts (+ the call tracer's traces) per height, RAW_THREADS
threads each sending batches of RAW_BATCH heights, answers decoded and nothing else done with them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.blocks.knobs import RAW_BATCH, RAW_PASSES, RAW_THREADS
from bench.common import chunked
from bench.cpu import cpu_per_block, cpu_seconds
from bench.node import Calls, batch_results, open_node
from wallet.chain.transport import Transport
from workers.devstack import Stack

CALLS_PER_HEIGHT = 3  # block, receipts and, traced, the traces: a chunk is sent as one request
# A traced chunk keeps the node busy for a minute or more when every thread sends one at once.
RAW_TIMEOUT = 300.0


def height_calls(height: int, with_traces: bool) -> Calls:
    calls: Calls = [("eth_getBlockByNumber", [hex(height), True]), ("eth_getBlockReceipts", [hex(height)])]
    if with_traces:
        calls.append(("debug_traceBlockByNumber", [hex(height), {"tracer": "callTracer"}]))
    return calls


def raw_ceiling(url: str, heights: list[int], with_traces: bool = False) -> dict[str, float]:
    """Blocks and transactions per second of a plain parallel fetch of `heights`."""
    local = threading.local()
    nodes: list[Transport] = []

    def fetch(chunk: Sequence[int]) -> int:
        node = getattr(local, "node", None)
        if node is None:  # one Transport per thread: it holds one HTTP session
            node = local.node = open_node(url, CALLS_PER_HEIGHT * RAW_BATCH, RAW_TIMEOUT)
            nodes.append(node)
        results = batch_results(node, [call for h in chunk for call in height_calls(h, with_traces)])
        return sum(len(r["transactions"]) for r in results if isinstance(r, dict) and "transactions" in r)

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(RAW_THREADS) as pool:
            txs = sum(pool.map(fetch, list(chunked(heights, RAW_BATCH))))
        seconds = time.perf_counter() - started
    finally:
        for node in nodes:
            node.close()
    return {"blocks": len(heights), "txs": txs, "seconds": seconds, "blocks_per_s": len(heights) / seconds,
            "tx_per_s": txs / seconds}


def best_raw(stack: Stack, heights: list[int]) -> dict[str, Any]:
    """The best of RAW_PASSES raw fetches (the ceiling, not a pass a neighbour slowed down), each
    with the CPU every process spent on it per block."""
    passes = []
    for _ in range(RAW_PASSES):
        cpu_before = cpu_seconds(stack)
        one: dict[str, Any] = raw_ceiling(stack.rpc_url, heights)
        one["cpu_ms_per_block"] = cpu_per_block(cpu_before, cpu_seconds(stack), len(heights))
        passes.append(one)
    best = max(passes, key=lambda p: p["blocks_per_s"])
    return {**best, "passes_blocks_per_s": [p["blocks_per_s"] for p in passes]}
