"""The blocks bench's sizes (environment overrides for quick runs) and its fixed choices."""

from __future__ import annotations

import os


def knob(name: str, default: int) -> int:
    """BENCH_<name> from the environment, else `default`."""
    return int(os.environ.get(f"BENCH_{name}", default))


BLOCKS = knob("BLOCKS", 1000)
TXS = knob("TXS", 50)
WATCHED = knob("WATCHED", 100_000)
LATENCY_SAMPLES = knob("LATENCY_SAMPLES", 40)
SEED = knob("SEED", 7)
# Later runs, each on the first blocks; 0 skips one.
TRACED_BLOCKS = min(BLOCKS, knob("TRACED_BLOCKS", 200))
PROVIDER_BLOCKS = min(BLOCKS, knob("PROVIDER_BLOCKS", 150))
PINNED_BLOCKS = min(BLOCKS, knob("PINNED_BLOCKS", 400))
FSYNC_BLOCKS = min(BLOCKS, knob("FSYNC_BLOCKS", 400))

# Experiments: BENCH_WALLET_SCAN_FETCH_PARALLELISM=3 sets WALLET_SCAN_FETCH_PARALLELISM for the
# system's processes.
WALLET_OVERRIDES = {name.removeprefix("BENCH_"): value for name, value in os.environ.items()
                    if name.startswith("BENCH_WALLET_")}

PREFIX = "wbblk"  # the first deployment's key prefix; later ones add a suffix
REQUIRED_CONFIRMATIONS = 12
SCAN_INTERVAL_S = 0.25
SCAN_MAX_NEW_PER_TICK = 2000
WORKER_CONCURRENCY = 2  # the stack's worker runs `-c 2`
RAW_THREADS, RAW_BATCH = 4, 50  # raw ceiling: threads x heights per batch (as in NOTES.md)
RAW_PASSES = 2  # the raw ceiling is the best of these
PROFILE_BLOCKS = 200
SYSTEM_TIMEOUT = 600.0
