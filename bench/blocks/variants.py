"""The later runs, each on a deployment of its own over the same servers and chain: the call
tracer on; behind a provider's caps; node and system pinned to cores of their own; Redis at
`appendfsync always` against `everysec`. Each is a ratio against a baseline measured in it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from bench import provider
from bench.blocks.deposit_listener import DepositListener
from bench.blocks.knobs import FSYNC_BLOCKS, PINNED_BLOCKS, PROVIDER_BLOCKS, TRACED_BLOCKS, TXS
from bench.blocks.raw_fetch import best_raw, raw_ceiling
from bench.blocks.system import expected_deposits, next_deployment, run_system
from workers.devstack import Stack

FSYNC_POLICIES = ("everysec", "always")  # always last: the stack's default, left in place


@dataclass(frozen=True)
class SharedSetup:
    """What every run shares: the stack's servers, the Kafka listener, the chain's deposits
    (tx hash -> block) and the watched addresses."""

    stack: Stack
    listener: DepositListener
    redis: redis.Redis
    expected: dict[str, int]
    watched: list[bytes]

    def scan(self, suffix: str, env: dict[str, str], heights: list[int],
             after_start: Callable[[], None] | None = None) -> dict[str, Any]:
        """The system's scan of `heights` by a new deployment (key prefix + `suffix`, `env` set)."""
        next_deployment(self.stack, self.redis, suffix, self.watched, env)
        return run_system(self.stack, self.listener, self.redis, expected_deposits(self.expected, heights),
                          (heights[0], heights[-1]), after_start=after_start)


def traced(setup: SharedSetup, heights: list[int]) -> dict[str, Any]:
    """The system with the call tracer on, against a raw fetch that traces too."""
    traced_raw = raw_ceiling(setup.stack.rpc_url, heights, with_traces=True)
    run = setup.scan("t", {"WALLET_TRACE_INTERNAL_TRANSFERS": "true"}, heights)
    run["tx_per_s"] = len(heights) * TXS / run["seconds"]
    run["raw"] = traced_raw
    run["ratio_vs_raw_traced"] = run["blocks_per_s"] / traced_raw["blocks_per_s"]
    return run


def traced_summary(t: dict[str, Any]) -> str:
    return (f"traced ({t['blocks']} blocks): raw {t['raw']['blocks_per_s']:.1f} blocks/s, system "
            f"{t['blocks_per_s']:.1f} blocks/s, ratio {t['ratio_vs_raw_traced']:.2f}")


def behind_provider(setup: SharedSetup, heights: list[int]) -> dict[str, Any]:
    """A plain client paced to a provider's caps, against the system configured for them
    (bench/provider.py)."""
    with provider.provider_proxy(setup.stack) as proxy:
        plain = provider.plain_fetch(proxy.url, heights)
        proxy.reset_stats()
        env = provider.system_env(proxy)
        system = setup.scan("p", env, heights)
        stats = proxy.stats()
        for key in env:
            setup.stack.config.extra_env.pop(key, None)
    return {
        "limits": f"batch cap {provider.PROVIDER_BATCH}, {provider.PROVIDER_RPS:.0f} calls/s, "
                  "no eth_getBlockReceipts",
        "plain": plain, "system": system, "ratio": system["blocks_per_s"] / plain["blocks_per_s"],
        "ratio_after_beat_ready": system["blocks_per_s_after_beat_ready"] / plain["blocks_per_s"],
        "provider_saw": {"calls": stats.calls, "rate_limited": stats.rate_limited,
                         "batches_too_large": stats.batches_too_large, "bad_gateway": stats.bad_gateway},
    }


def provider_summary(p: dict[str, Any]) -> str:
    return (f"behind a provider ({p['limits']}): plain {p['plain']['blocks_per_s']:.2f} blocks/s, "
            f"system {p['system']['blocks_per_s']:.2f} blocks/s, ratio {p['ratio']:.2f}")


def pinned(setup: SharedSetup, heights: list[int]) -> dict[str, Any]:
    """The node on core 0 and everything else (Redis, Kafka, our processes, the raw client) on
    core 1, so the ratio shows our own cost, not the node's."""
    stack = setup.stack
    node, rest = {0}, {1}
    own = os.sched_getaffinity(0)
    try:
        provider.pin(stack, ["node"], node)
        provider.pin(stack, ["redis", "kafka"], rest)
        os.sched_setaffinity(0, rest)  # the raw client and this process's Kafka listener
        raw = best_raw(stack, heights)
        system = setup.scan("pin", {}, heights,
                            after_start=lambda: provider.pin(stack, ["worker", "bridge", "beat"], rest))
    finally:
        os.sched_setaffinity(0, own)
        provider.pin(stack, ["node", "redis", "kafka", "worker", "bridge", "beat"], own)
    return {"raw": raw, "system": system, "ratio": system["blocks_per_s"] / raw["blocks_per_s"],
            "ratio_after_beat_ready": system["blocks_per_s_after_beat_ready"] / raw["blocks_per_s"]}


def pinned_summary(p: dict[str, Any]) -> str:
    return (f"pinned (node on core 0, the rest on core 1): raw {p['raw']['blocks_per_s']:.1f} blocks/s, "
            f"system {p['system']['blocks_per_s']:.1f} blocks/s, ratio {p['ratio']:.2f}")


def fsync_cost(setup: SharedSetup, heights: list[int]) -> dict[str, Any]:
    """The same blocks scanned with Redis at appendfsync everysec, then always (the default), by
    two fresh deployments: the cost of "nothing leaves before it is durable"."""
    runs: dict[str, dict[str, Any]] = {}
    try:
        for policy in FSYNC_POLICIES:
            setup.redis.config_set("appendfsync", policy)
            # The gate off for both, so that the fsync is the only difference between the runs.
            runs[policy] = setup.scan(f"f{policy[0]}", {"WALLET_REDIS_DURABILITY": "none"}, heights)
    finally:
        setup.redis.config_set("appendfsync", "always")
        setup.stack.config.extra_env.pop("WALLET_REDIS_DURABILITY", None)
    return {"blocks": len(heights), **runs,
            "ratio_always_vs_everysec": runs["always"]["blocks_per_s"] / runs["everysec"]["blocks_per_s"],
            "ratio_always_vs_everysec_after_beat_ready": runs["always"]["blocks_per_s_after_beat_ready"]
            / runs["everysec"]["blocks_per_s_after_beat_ready"]}


def fsync_summary(f: dict[str, Any]) -> str:
    return (f"fsync ({f['blocks']} blocks): everysec {f['everysec']['blocks_per_s']:.1f} blocks/s, "
            f"always {f['always']['blocks_per_s']:.1f} blocks/s, ratio always/everysec "
            f"{f['ratio_always_vs_everysec']:.2f}")


@dataclass(frozen=True)
class LaterRun:
    name: str  # its key in the results
    blocks: int  # the first this many generated blocks; 0 skips it
    run: Callable[[SharedSetup, list[int]], dict[str, Any]]
    summary: Callable[[dict[str, Any]], str]  # the line printed when it is done


LATER_RUNS = (
    LaterRun("traced", TRACED_BLOCKS, traced, traced_summary),
    LaterRun("provider", PROVIDER_BLOCKS, behind_provider, provider_summary),
    # Pinning needs two cores this process may use.
    LaterRun("pinned", PINNED_BLOCKS if provider.can_pin() else 0, pinned, pinned_summary),
    LaterRun("fsync", FSYNC_BLOCKS, fsync_cost, fsync_summary),
)
