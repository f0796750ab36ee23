"""The blocks bench from start to end: the chain, the baselines, the system's runs, each printed
as it finishes and all saved to bench/results/blocks.json."""

from __future__ import annotations

import random
from contextlib import closing
from typing import Any

import redis

from bench.blocks import in_process, variants
from bench.blocks.chain_gen import NODE_MAX_BATCH, GeneratedChain, generate_chain
from bench.blocks.deposit_listener import DepositListener
from bench.blocks.knobs import (
    BLOCKS,
    LATENCY_SAMPLES,
    PREFIX,
    PROFILE_BLOCKS,
    REQUIRED_CONFIRMATIONS,
    SCAN_INTERVAL_S,
    SCAN_MAX_NEW_PER_TICK,
    SEED,
    TXS,
    WALLET_OVERRIDES,
    WATCHED,
    WORKER_CONCURRENCY,
)
from bench.blocks.latency import measure_latency
from bench.blocks.raw_fetch import best_raw
from bench.blocks.system import add_watched, run_system
from bench.common import bench_stack, save_results
from bench.node import open_node
from wallet.chain.transport import Transport
from workers.devstack import Stack

INFRASTRUCTURE = ["redis", "kafka", "node"]  # the system's own processes start on each run's clock


def say(line: str) -> None:
    print(line, flush=True)


def system_env(first: int) -> dict[str, str]:
    """The first deployment's settings: scan from the first generated block, untraced."""
    return {
        "WALLET_START_HEIGHT": str(first),
        "WALLET_REQUIRED_CONFIRMATIONS": str(REQUIRED_CONFIRMATIONS),
        "WALLET_TRACE_INTERNAL_TRANSFERS": "false",
        "WALLET_SCAN_MAX_NEW_PER_TICK": str(SCAN_MAX_NEW_PER_TICK),
        "WALLET_SCAN_INTERVAL_SECONDS": str(SCAN_INTERVAL_S),
        **WALLET_OVERRIDES,
    }


def main() -> None:
    rng = random.Random(SEED)
    results: dict[str, Any] = {
        "config": {
            "blocks": BLOCKS,
            "txs_per_block": TXS,
            "watched": WATCHED,
            "worker_concurrency": WORKER_CONCURRENCY,
            "required_confirmations": REQUIRED_CONFIRMATIONS,
            "scan_interval_s": SCAN_INTERVAL_S,
            "scan_max_new_per_tick": SCAN_MAX_NEW_PER_TICK,
        }
    }
    with (bench_stack(PREFIX, start=INFRASTRUCTURE) as stack, redis.Redis.from_url(stack.redis_url) as r,
          closing(open_node(stack.rpc_url, NODE_MAX_BATCH)) as node):
        watched = [rng.randbytes(20) for _ in range(WATCHED)]
        # Half the watched addresses get the chain's deposits; the other half the latency run's.
        chain = generate(node, watched[: WATCHED // 2], rng, results)
        results["config"]["watched_setup_s"] = add_watched(r, PREFIX, watched)
        heights = list(range(chain.first, chain.last + 1))
        baselines(stack, heights, results)
        stack.config.extra_env.update(system_env(chain.first))
        with DepositListener(stack.kafka_bootstrap) as listener:
            setup = variants.SharedSetup(stack, listener, r, chain.expected, watched)
            first_system_run(setup, chain, heights, results)
            if LATENCY_SAMPLES:
                targets = rng.sample(watched[WATCHED // 2 :], LATENCY_SAMPLES)
                lat = results["latency_1s_blocks"] = measure_latency(node, listener, chain, targets)
                say(f"latency mined -> kafka: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms")
            later_runs(setup, heights, results)
    save_results("blocks", results)


def generate(node: Transport, watched: list[bytes], rng: random.Random,
             results: dict[str, Any]) -> GeneratedChain:
    say(f"generating {BLOCKS} blocks x {TXS} transactions ...")
    chain = generate_chain(node, watched, rng)
    ntx, deposits = BLOCKS * TXS, len(chain.expected)
    results["generation"] = {
        "seconds": chain.seconds,
        "blocks_per_s": BLOCKS / chain.seconds,
        "tx_per_s": ntx / chain.seconds,
        "first_block": chain.first,
        "last_block": chain.last,
        "eth_transfers": chain.kinds["eth"],
        "erc20_transfers": chain.kinds["erc20"],
        "deposits": deposits,
    }
    say(f"generated blocks {chain.first}..{chain.last} ({ntx} tx, {deposits} to watched addresses) "
        f"in {chain.seconds:.1f} s")
    return chain


def baselines(stack: Stack, heights: list[int], results: dict[str, Any]) -> None:
    """The raw ceiling, and the domain code in this process: what the system is compared to."""
    raw = results["raw"] = best_raw(stack, heights)
    say(f"raw ceiling: {raw['blocks_per_s']:.1f} blocks/s, {raw['tx_per_s']:.0f} tx/s")
    profile = results["profile_one_block"] = in_process.profile_block(stack, heights[: PROFILE_BLOCKS + 1])
    say("one block in process (mean ms): " + ", ".join(f"{k} {v['mean_ms']:.2f}" for k, v in profile.items()))
    what_if = results["what_if_batched_in_process"] = in_process.batched_in_process(stack, heights)
    say(f"what-if, {what_if['threads']} threads x {what_if['heights_per_fetch']} heights per fetch, "
        f"in process: {what_if['blocks_per_s']:.1f} blocks/s")


def first_system_run(setup: variants.SharedSetup, chain: GeneratedChain, heights: list[int],
                results: dict[str, Any]) -> None:
    """The first deployment's scan of every generated block, against the raw ceiling."""
    raw, expected = results["raw"], chain.expected
    system = run_system(setup.stack, setup.listener, setup.redis, len(expected), (chain.first, chain.last))
    system["tx_per_s"] = len(heights) * TXS / system["seconds"]
    system["ratio_vs_raw"] = system["blocks_per_s"] / raw["blocks_per_s"]
    # Beat is a long-running process: its interpreter start-up (~2-3 s here) is no per-block work.
    system["ratio_vs_raw_after_beat_ready"] = system["blocks_per_s_after_beat_ready"] / raw["blocks_per_s"]
    tasks = system["worker_tasks"]
    if tasks.get("tasks"):
        system["worker_busy_share"] = tasks["sum_s"] / (WORKER_CONCURRENCY * system["seconds"])
    results["system"] = system
    say(f"system: {system['blocks_per_s']:.1f} blocks/s, {system['tx_per_s']:.0f} tx/s, "
        f"ratio {system['ratio_vs_raw']:.2f} "
        f"({system['ratio_vs_raw_after_beat_ready']:.2f} from beat ready); "
        f"{system['deposit_events_distinct']} deposit events (of {len(expected)})")


def later_runs(setup: variants.SharedSetup, heights: list[int], results: dict[str, Any]) -> None:
    """Each on a deployment of its own, each skipped when its knob is 0."""
    for later in variants.LATER_RUNS:
        if later.blocks:
            results[later.name] = later.run(setup, heights[: later.blocks])
            say(later.summary(results[later.name]))
