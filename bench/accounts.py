"""Addresses created per second through the system, against raw key generation in the same run.

System: create_account tasks -> key-holding worker (generate, seal, one MULTI/EXEC with the outbox)
-> bridge -> Kafka; the clock stops when the last `address.created` event has been read back from
Kafka. Baselines in a tight loop in this process: the HD derivation the key worker does by default
(one BIP-32 step from the cached account node, plus the address), random key generation (coincurve
+ keccak) and eth-account's Account.create() for reference. Machines here are noisy: compare the
ratio.

Durability: the same system measurement with Redis at `appendfsync everysec` and at `always` (the
default), switched by CONFIG SET on the same server and alternated (ABBA) FSYNC_ROUNDS times, with the
key worker and bridge restarted with WALLET_REDIS_DURABILITY=none so that the fsync is the only
difference: `fsync.*.ratio_always_vs_everysec` is the cost of "nothing leaves before it is
durable". BENCH_ACCOUNTS_SCALE (default 1) scales the number of tasks for a quick run;
BENCH_FSYNC_ROUNDS (default 4, 0 skips).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid

import redis

from bench.common import EventCounter, bench_stack, save_results
from workers.devstack import Stack

RAW_KEYS = 5_000
SCALE = float(os.environ.get("BENCH_ACCOUNTS_SCALE", "1"))
# (addresses per task, tasks)
BATCHES = [(1, max(1, round(500 * SCALE))), (100, max(1, round(50 * SCALE)))]
FSYNC_ROUNDS = int(os.environ.get("BENCH_FSYNC_ROUNDS", "4"))


def raw_rates() -> dict[str, float]:
    from eth_account import Account

    from wallet.custody.hd import external_chain, seed_of
    from wallet.custody.keys import address_of, new_key_pair

    node = external_chain(seed_of("test test test test test test test test test test test junk"), 0)
    started = time.perf_counter()
    for i in range(RAW_KEYS):
        address_of(node.child(i).key)
    hd = RAW_KEYS / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(RAW_KEYS):
        new_key_pair()
    ours = RAW_KEYS / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(RAW_KEYS // 5):
        Account.create()
    eth_account = (RAW_KEYS // 5) / (time.perf_counter() - started)
    return {"hd_derivations_per_s": hd, "coincurve_keys_per_s": ours, "eth_account_create_per_s": eth_account}


def system_rate(stack: Stack, per_task: int, tasks: int) -> dict[str, float]:
    from tasks.accounts import create_account

    mark = uuid.uuid4().hex
    events = EventCounter(stack.kafka_bootstrap, "address.created")
    expected = per_task * tasks
    started = time.perf_counter()
    for _ in range(tasks):
        create_account.delay(meta={"bench": mark}, count=per_task)
    enqueued = time.perf_counter() - started
    events.wait_for(expected, mark.encode())
    elapsed = time.perf_counter() - started
    return {"addresses": expected, "seconds": elapsed, "enqueue_seconds": enqueued,
            "addresses_per_s": expected / elapsed}


def main() -> None:
    with bench_stack() as stack:
        raw = raw_rates()
        results = {"raw": raw, "system": {}}
        for per_task, tasks in BATCHES:
            rate = system_rate(stack, per_task, tasks)
            # The stack runs in the default HD mode: its raw work per address is one derivation.
            rate["ratio_vs_raw_hd_derivation"] = rate["addresses_per_s"] / raw["hd_derivations_per_s"]
            rate["ratio_vs_raw_keygen"] = rate["addresses_per_s"] / raw["coincurve_keys_per_s"]
            results["system"][f"{per_task}_per_task"] = rate
        if FSYNC_ROUNDS:
            results["fsync"] = fsync_cost(stack)
        save_results("accounts", results)


def fsync_cost(stack: Stack) -> dict[str, dict[str, object]]:
    """Addresses per second with appendfsync everysec against always, alternated in this run."""
    # The gate off in the processes that have one, so a server at everysec is not refused.
    stack.stop_all(["worker-keys", "bridge"])
    stack.config.extra_env["WALLET_REDIS_DURABILITY"] = "none"
    stack.start(["worker-keys", "bridge"])
    client = redis.Redis.from_url(stack.redis_url)
    out: dict[str, dict[str, object]] = {}
    try:
        for per_task, tasks in BATCHES:
            runs: dict[str, list[float]] = {"everysec": [], "always": []}
            for round_ in range(FSYNC_ROUNDS):
                # ABBA order: a load that drifts during the run weighs on both policies alike.
                for policy in ("everysec", "always") if round_ % 2 == 0 else ("always", "everysec"):
                    client.config_set("appendfsync", policy)
                    runs[policy].append(system_rate(stack, per_task, tasks)["addresses_per_s"])
            pairs = [a / e for a, e in zip(runs["always"], runs["everysec"], strict=True)]
            out[f"{per_task}_per_task"] = {
                "addresses": per_task * tasks, "everysec_per_s": runs["everysec"], "always_per_s": runs["always"],
                # The median of each round's pair: one disturbed measurement does not decide it.
                "ratio_always_vs_everysec": statistics.median(pairs), "round_ratios": pairs,
            }
    finally:
        client.config_set("appendfsync", "always")
        client.close()
        stack.config.extra_env.pop("WALLET_REDIS_DURABILITY", None)
    return out

if __name__ == "__main__":
    main()
