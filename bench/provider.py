"""The blocks benchmark behind a hosted provider's limits, and with node and system on cores of
their own.

Behind the provider-like proxy (batches of at most 10, 300 calls/s counting each batch item, no
`eth_getBlockReceipts`), the ceiling is the allowance, not the CPU: a block of 50 transactions
costs 51 calls. The baseline is a plain, well-behaved client under the same caps (block, then its
receipts one call each, in batches of 10, paced to the allowance, one request at a time: the
wallet's own JSON-RPC transport used as a plain client would use it); the system is a second
deployment on the same chain pointed at the proxy with WALLET_ETH_RPC_MAX_RPS and
WALLET_ETH_RPC_MAX_BATCH set to the plan's figures. Both are measured in the same run.

`pin()` puts a stack's processes (and their pool children) on given cores, as `taskset` does, so
the plain run can show the system's own cost with the node on core 0 and everything else on 1.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

from bench.node import batch_results
from tests.provider_proxy import ProviderProxy, ProxyLimits
from wallet.chain.transport import Transport
from workers.devstack import Stack
from workers.supervise import group_members

PROVIDER_BATCH = 10
PROVIDER_RPS = 300.0
PROVIDER_LIMITS = ProxyLimits(batch_cap=PROVIDER_BATCH, max_rps=PROVIDER_RPS,
                              dropped_methods=frozenset({"eth_getBlockReceipts"}))


def provider_proxy(stack: Stack) -> ProviderProxy:
    return ProviderProxy(stack.rpc_url, PROVIDER_LIMITS)


def system_env(proxy: ProviderProxy) -> dict[str, str]:
    """What a user of such a plan sets: its URL, its rate and its batch cap."""
    return {"WALLET_ETH_RPC_URL": proxy.url, "WALLET_ETH_RPC_MAX_RPS": str(PROVIDER_RPS),
            "WALLET_ETH_RPC_MAX_BATCH": str(PROVIDER_BATCH)}


class _Pace:
    """A client-side token bucket of `rate` calls per second with one second of burst: what a
    careful plain client does, and the shape of the provider's own limit. A CallBudget of this
    process alone (the system shares one through Redis)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = time.monotonic()

    def take(self, calls: int) -> float:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= calls:
            self.tokens -= calls
            return 0.0
        return (calls - self.tokens) / self.rate


def plain_fetch(url: str, heights: Sequence[int]) -> dict[str, Any]:
    """Block(full), then each transaction's receipt, in batches of PROVIDER_BATCH, paced to
    PROVIDER_RPS: the best a plain client does under the plan's caps."""
    # Batches of at most PROVIDER_BATCH, each taken from the pace before it is sent.
    node = Transport(url, timeout=60, max_batch=PROVIDER_BATCH, budget=_Pace(PROVIDER_RPS))

    started = time.perf_counter()
    txs = 0
    for start in range(0, len(heights), PROVIDER_BATCH):
        wanted = heights[start : start + PROVIDER_BATCH]
        blocks = batch_results(node, [("eth_getBlockByNumber", [hex(h), True]) for h in wanted])
        hashes = [tx["hash"] for block in blocks for tx in block["transactions"]]
        receipts = batch_results(node, [("eth_getTransactionReceipt", [h]) for h in hashes])
        if any(r is None for r in receipts):
            raise RuntimeError("a receipt is missing")
        txs += len(hashes)
    seconds = time.perf_counter() - started
    node.close()
    return {"blocks": len(heights), "txs": txs, "seconds": seconds, "blocks_per_s": len(heights) / seconds,
            "calls_per_s": (len(heights) + txs) / seconds}


def pin(stack: Stack, names: Sequence[str], cores: set[int]) -> None:
    """Put the named processes of `stack` (each with all of its group) on `cores`."""
    for name in names:
        pid = stack.pid(name)
        if pid is None:
            continue
        for member in group_members(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):  # gone, or not ours
                os.sched_setaffinity(member, cores)


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
