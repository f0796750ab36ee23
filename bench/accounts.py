"""Addresses created per second through the system, against raw key generation in the same run.

System: create_account tasks -> key-holding worker (generate, seal, one MULTI/EXEC with the outbox)
-> bridge -> Kafka; the clock stops when the last `address.created` event has been read back from
Kafka. Baselines in a tight loop in this process: the HD derivation the key worker does by default
(one BIP-32 step from the cached account node, plus the address), random key generation (coincurve
+ keccak) and eth-account's Account.create() for reference. Machines here are noisy: compare the
ratio.
"""

from __future__ import annotations

import time
import uuid

from bench.common import EventCounter, bench_stack, save_results
from workers.devstack import Stack

RAW_KEYS = 5_000
BATCHES = [(1, 500), (100, 50)]  # (addresses per task, tasks)


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
        save_results("accounts", results)

if __name__ == "__main__":
    main()
