"""Deposit scanning speed through the system, against a raw JSON-RPC read of the same blocks.

One run, one stack (real Redis, Tansu, Anvil, Celery worker `-c 2`, bridge, beat):

1. Generate a chain on Anvil (chain_gen.py): SampleToken, then BLOCKS blocks of TXS transactions.
2. Put WATCHED addresses (the deposit recipients among them) in the watched set.
3. Raw ceiling (raw_fetch.py): block(full) + block receipts for every height, 4 threads x batches
   of 50 heights through the wallet's JSON-RPC Transport, decode only.
4. In this process (in_process.py): where one block's time goes, and a what-if without a task per
   height, both under scratch key prefixes.
5. System (system.py): start worker and bridge, then beat; the clock runs from beat's start until
   the watermark reaches the last block AND every expected `deposit.seen` was read back from Kafka.
6. Latency at 1 s block time (latency.py): deposit -> mined -> `deposit.seen`.
7. Later runs, each on a deployment of its own (variants.py): the call tracer on (TRACED_BLOCKS);
   behind a provider-like proxy (PROVIDER_BLOCKS, bench/provider.py); node on core 0 and the rest
   on core 1 (PINNED_BLOCKS); Redis at `appendfsync always` against `everysec`, the relay's gate
   off for both (FSYNC_BLOCKS): the cost of "nothing leaves before it is durable", as a ratio
   measured in this run.

Env overrides for quick runs: BENCH_BLOCKS, BENCH_TXS, BENCH_WATCHED, BENCH_LATENCY_SAMPLES,
BENCH_TRACED_BLOCKS (0 skips the traced run), BENCH_PROVIDER_BLOCKS, BENCH_PINNED_BLOCKS,
BENCH_FSYNC_BLOCKS (0 skips each), BENCH_SEED; BENCH_WALLET_X=v sets WALLET_X=v for the
system's processes (knobs.py).
"""

from bench.blocks.run import main

__all__ = ["main"]
