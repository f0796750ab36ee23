"""Deposit scanning speed through the system, against a raw JSON-RPC read of the same blocks.

One run, one stack (real Redis, Tansu, Anvil, Celery worker `-c 2`, bridge, beat):

1. Generate a chain on Anvil (automine off): SampleToken, then BLOCKS blocks of TXS signed
   transactions each (ETH transfers and ERC-20 `transfer`s ~50/50, random recipients, ~1% to
   watched addresses), sent as batched `eth_sendRawTransaction` and mined with `evm_mine`.
2. Put WATCHED addresses (the deposit recipients among them) in the watched set.
3. Raw ceiling: block(full) + block receipts for every height, 4 threads x batches of 50 heights,
   requests + orjson, decode only.
4. Profile one block in this process (fetch, map, record under a scratch key prefix).
5. System: start worker and bridge, then beat; the clock runs from beat's start until the
   watermark reaches the last block AND every expected `deposit.seen` was read back from Kafka.
6. Latency at 1 s block time: deposit -> mined (receipt polled every 20 ms) -> `deposit.seen`.
7. Optional: the same system scan of TRACED_BLOCKS blocks with the call tracer on.
8. Behind a provider-like proxy (batch cap 10, 300 calls/s, no eth_getBlockReceipts), the first
   PROVIDER_BLOCKS blocks: a plain client paced to the same caps against the system configured for
   them (bench/provider.py).
9. Pinned: PINNED_BLOCKS blocks with the node on core 0 and everything else (Redis, Kafka, our
   processes, the raw client) on core 1, so the ratio shows our own cost, not the node's.
10. Durability: FSYNC_BLOCKS blocks scanned by two fresh deployments, Redis at `appendfsync
   everysec` then `always` (CONFIG SET on the same server), the relay's gate off for both
   (WALLET_REDIS_DURABILITY=none) so only the fsync differs: the cost of "nothing leaves before
   it is durable", as a ratio measured in this run.

Env overrides for quick runs: BENCH_BLOCKS, BENCH_TXS, BENCH_WATCHED, BENCH_LATENCY_SAMPLES,
BENCH_TRACED_BLOCKS (0 skips the traced run), BENCH_PROVIDER_BLOCKS, BENCH_PINNED_BLOCKS,
BENCH_FSYNC_BLOCKS (0 skips each), BENCH_SEED; BENCH_WALLET_X=v sets WALLET_X=v for the
system's processes.
"""

from __future__ import annotations

import os
import queue
import random
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import redis
import requests

from bench import provider
from bench.common import save_results
from workers.devstack import Stack, StackConfig

BLOCKS = int(os.environ.get("BENCH_BLOCKS", "1000"))
TXS = int(os.environ.get("BENCH_TXS", "50"))
WATCHED = int(os.environ.get("BENCH_WATCHED", "100_000"))
LATENCY_SAMPLES = int(os.environ.get("BENCH_LATENCY_SAMPLES", "40"))
TRACED_BLOCKS = int(os.environ.get("BENCH_TRACED_BLOCKS", "200"))
SEED = int(os.environ.get("BENCH_SEED", "7"))
PROVIDER_BLOCKS = int(os.environ.get("BENCH_PROVIDER_BLOCKS", "150"))
PINNED_BLOCKS = int(os.environ.get("BENCH_PINNED_BLOCKS", "400"))
FSYNC_BLOCKS = int(os.environ.get("BENCH_FSYNC_BLOCKS", "400"))

DEPOSIT_SHARE = 0.01  # of transactions, to watched addresses
ERC20_SHARE = 0.5
SENDERS = 10  # Anvil's funded default accounts
MNEMONIC = "test test test test test test test test test test test junk"
SEND_BATCH = 50  # eth_sendRawTransaction per HTTP request
RAW_THREADS, RAW_BATCH = 4, 50  # raw ceiling: threads x heights per batch (as in NOTES.md)
RAW_PASSES = 2
PROFILE_BLOCKS = 200
REQUIRED_CONFIRMATIONS = 12
PREFIX = "wbblk"
TOPIC = "transaction"
SYSTEM_TIMEOUT = 600.0

TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")
GAS_PRICE = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
_TASK_DONE = re.compile(r"Task tasks\.blocks\.process_block\[[^\]]+\] succeeded in ([0-9.]+)s")


# ---------------------------------------------------------------- JSON-RPC, raw


class Rpc:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": "application/json"})

    def call(self, method: str, params: list[Any]) -> Any:
        answer = orjson.loads(
            self.session.post(
                self.url,
                data=orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
                timeout=60,
            ).content
        )
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        payload = orjson.dumps(
            [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        )
        answer = orjson.loads(self.session.post(self.url, data=payload, timeout=120).content)
        if not isinstance(answer, list) or len(answer) != len(calls):
            raise RuntimeError(f"batch of {len(calls)} answered {str(answer)[:200]}")
        answer.sort(key=lambda item: item["id"])
        errors = [item["error"] for item in answer if "error" in item]
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(calls)} calls failed, first: {errors[0]}")
        return [item["result"] for item in answer]


def chunked(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---------------------------------------------------------------- chain generation


def senders() -> list[Any]:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return [Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(SENDERS)]


def transfer_data(to: bytes, amount: int) -> bytes:
    return TRANSFER_SELECTOR + to.rjust(32, b"\0") + amount.to_bytes(32, "big")


def mine_with(rpc: Rpc, raws: list[str]) -> int:
    """Send raw transactions (batched) and mine one block; returns its height."""
    for chunk in chunked(raws, SEND_BATCH):
        rpc.batch([("eth_sendRawTransaction", [raw]) for raw in chunk])
    rpc.call("evm_mine", [])
    return int(rpc.call("eth_blockNumber", []), 16)


def setup_token(rpc: Rpc, accounts: list[Any], chain_id: int, nonces: list[int]) -> str:
    """Deploy SampleToken from account 0 and give every sender a share."""
    from eth_abi import encode

    from wallet.contracts import load_artifact

    artifact = load_artifact("SampleToken")
    data = bytes.fromhex(artifact["bytecode"].removeprefix("0x")) + encode(
        ["string", "string", "uint8", "uint256"], ["Bench Token", "BNCH", 6, 10**36]
    )
    deployer = accounts[0]
    signed = deployer.sign_transaction(
        {"chainId": chain_id, "nonce": nonces[0], "data": data, "value": 0, "gas": 3_000_000, **GAS_PRICE}
    )
    nonces[0] += 1
    mine_with(rpc, ["0x" + bytes(signed.raw_transaction).hex()])
    receipt = rpc.call("eth_getTransactionReceipt", ["0x" + bytes(signed.hash).hex()])
    if receipt is None or receipt["status"] != "0x1":
        raise RuntimeError(f"SampleToken deployment failed: {receipt}")
    token = receipt["contractAddress"]
    raws = []
    for account in accounts[1:]:
        tx = {
            "chainId": chain_id,
            "nonce": nonces[0],
            "to": bytes.fromhex(token[2:]),
            "value": 0,
            "data": transfer_data(bytes.fromhex(account.address[2:]), 10**33),
            "gas": 100_000,
            **GAS_PRICE,
        }
        raws.append("0x" + bytes(deployer.sign_transaction(tx).raw_transaction).hex())
        nonces[0] += 1
    height = mine_with(rpc, raws)
    receipts = rpc.call("eth_getBlockReceipts", [hex(height)])
    if len(receipts) != len(raws) or any(r["status"] != "0x1" for r in receipts):
        raise RuntimeError("token distribution failed")
    return token


def generate_chain(rpc: Rpc, watched: list[bytes], rng: random.Random) -> dict[str, Any]:
    """BLOCKS blocks of TXS transactions; returns heights and the expected deposits (tx hash -> height)."""
    accounts = senders()
    chain_id = int(rpc.call("eth_chainId", []), 16)
    rpc.call("evm_setAutomine", [False])
    nonces = [
        int(n, 16) for n in rpc.batch([("eth_getTransactionCount", [a.address, "pending"]) for a in accounts])
    ]
    started = time.perf_counter()
    token = setup_token(rpc, accounts, chain_id, nonces)
    token_bytes = bytes.fromhex(token[2:])
    first = int(rpc.call("eth_blockNumber", []), 16) + 1

    # Signing (CPU, this process) overlaps with Anvil executing the previous block (other process).
    plans: queue.Queue[tuple[list[str], list[str]] | BaseException | None] = queue.Queue(maxsize=16)
    kinds = {"eth": 0, "erc20": 0}

    def sign_blocks() -> None:
        try:
            k = 0
            for _ in range(BLOCKS):
                raws, deposits = [], []
                for _ in range(TXS):
                    sender = k % SENDERS
                    k += 1
                    to_watched = rng.random() < DEPOSIT_SHARE
                    to = rng.choice(watched) if to_watched else rng.randbytes(20)
                    if rng.random() < ERC20_SHARE:
                        tx = {
                            "to": token_bytes,
                            "value": 0,
                            "data": transfer_data(to, rng.randint(1, 10**9)),
                            "gas": 100_000,
                        }
                        kinds["erc20"] += 1
                    else:
                        tx = {"to": to, "value": rng.randint(1, 10**12), "gas": 21_000}
                        kinds["eth"] += 1
                    signed = accounts[sender].sign_transaction(
                        {"chainId": chain_id, "nonce": nonces[sender], **tx, **GAS_PRICE}
                    )
                    nonces[sender] += 1
                    raws.append("0x" + bytes(signed.raw_transaction).hex())
                    if to_watched:
                        deposits.append("0x" + bytes(signed.hash).hex())
                plans.put((raws, deposits))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            plans.put(exc)

    signer = threading.Thread(target=sign_blocks, daemon=True)
    signer.start()
    expected: dict[str, int] = {}
    last = first - 1
    for i in range(BLOCKS):
        item = plans.get()
        if isinstance(item, BaseException):
            raise item
        assert item is not None
        raws, deposits = item
        last = mine_with(rpc, raws)
        if last != first + i:
            raise RuntimeError(f"expected block {first + i}, the node is at {last}")
        expected.update((h, last) for h in deposits)
        if (i + 1) % 200 == 0:
            print(f"  generated {i + 1}/{BLOCKS} blocks ({time.perf_counter() - started:.0f} s)", flush=True)
    signer.join()
    seconds = time.perf_counter() - started
    check_blocks(rpc, first, last, rng)
    return {
        "first": first,
        "last": last,
        "token": token,
        "expected": expected,
        "seconds": seconds,
        "accounts": accounts,
        "nonces": nonces,
        "chain_id": chain_id,
        "kinds": kinds,
    }


def check_blocks(rpc: Rpc, first: int, last: int, rng: random.Random) -> None:
    """Every block holds TXS transactions; a sample of blocks has every receipt successful."""
    heights = list(range(first, last + 1))
    for chunk in chunked(heights, 100):
        for height, block in zip(
            chunk, rpc.batch([("eth_getBlockByNumber", [hex(h), False]) for h in chunk]), strict=True
        ):
            if len(block["transactions"]) != TXS:
                raise RuntimeError(f"block {height} has {len(block['transactions'])} transactions, not {TXS}")
    sample = rng.sample(heights, min(20, len(heights)))
    for height, receipts in zip(
        sample, rpc.batch([("eth_getBlockReceipts", [hex(h)]) for h in sample]), strict=True
    ):
        failed = [r["transactionHash"] for r in receipts if r["status"] != "0x1"]
        if len(receipts) != TXS or failed:
            raise RuntimeError(f"block {height}: {len(receipts)} receipts, failed: {failed[:3]}")


def add_watched(client: redis.Redis, key: str, addresses: list[bytes]) -> float:
    started = time.perf_counter()
    for chunk in chunked(addresses, 10_000):
        pipe = client.pipeline(transaction=False)
        pipe.sadd(key, *("0x" + a.hex() for a in chunk))
        pipe.execute()
    return time.perf_counter() - started


# ---------------------------------------------------------------- raw ceiling


def raw_ceiling(url: str, heights: list[int], with_traces: bool = False) -> dict[str, float]:
    """Block(full) + receipts (+ callTracer) per height, RAW_THREADS x batches of RAW_BATCH heights."""
    local = threading.local()

    def fetch(chunk: Sequence[int]) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.headers.update({"Content-Type": "application/json"})
        calls = []
        for h in chunk:
            calls.append(
                {
                    "jsonrpc": "2.0",
                    "id": len(calls),
                    "method": "eth_getBlockByNumber",
                    "params": [hex(h), True],
                }
            )
            calls.append(
                {"jsonrpc": "2.0", "id": len(calls), "method": "eth_getBlockReceipts", "params": [hex(h)]}
            )
            if with_traces:
                calls.append(
                    {
                        "jsonrpc": "2.0",
                        "id": len(calls),
                        "method": "debug_traceBlockByNumber",
                        "params": [hex(h), {"tracer": "callTracer"}],
                    }
                )
        answer = orjson.loads(session.post(url, data=orjson.dumps(calls), timeout=300).content)
        if len(answer) != len(calls) or any("error" in item for item in answer):
            raise RuntimeError("raw batch failed")
        return sum(
            len(item["result"]["transactions"])
            for item in answer
            if isinstance(item["result"], dict) and "transactions" in item["result"]
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(RAW_THREADS) as pool:
        txs = sum(pool.map(fetch, list(chunked(heights, RAW_BATCH))))
    seconds = time.perf_counter() - started
    return {
        "blocks": len(heights),
        "txs": txs,
        "seconds": seconds,
        "blocks_per_s": len(heights) / seconds,
        "tx_per_s": txs / seconds,
    }


# ---------------------------------------------------------------- one block, in process


def profile_block(stack: Stack, heights: list[int]) -> dict[str, Any]:
    """Where one process_block's time goes, measured in this process under a scratch key prefix:
    JSON-RPC round trip + decode, mapping to the model, recording (find + SMISMEMBER + MULTI/EXEC),
    and the per-height Redis lock."""
    from wallet.chain import mappers
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    scratch = f"{PREFIX}prof"
    w = _scratch_wiring(stack, scratch)
    w.redis.sunionstore(w.keyspace.watched, [f"{PREFIX}:watched"])
    rpc, scanner = w.rpc, w.scanner
    scanner.process_block(heights[0])  # warm: connections, token metadata
    timings: dict[str, list[float]] = {
        "rpc": [],
        "map": [],
        "fetch_blocks": [],
        "record": [],
        "lock": [],
        "process_block": [],
    }
    for h in heights[1:]:
        t0 = time.perf_counter()
        block, receipts = (
            i["result"]
            for i in rpc.batch(
                [("eth_getBlockByNumber", [hex(h), True]), ("eth_getBlockReceipts", [hex(h)])]
            )
        )
        t1 = time.perf_counter()
        mappers.block_bundle(block, receipts, None)
        t2 = time.perf_counter()
        [bundle] = rpc.fetch_blocks([h], with_traces=False)
        t3 = time.perf_counter()
        scanner._record(bundle)
        t4 = time.perf_counter()
        with w.redis.lock(w.keyspace.block_lock(h), timeout=120, blocking_timeout=130):
            pass
        t5 = time.perf_counter()
        timings["rpc"].append(t1 - t0)
        timings["map"].append(t2 - t1)
        timings["fetch_blocks"].append(t3 - t2)
        timings["record"].append(t4 - t3)
        timings["lock"].append(t5 - t4)
    # The whole domain call once more on fresh heights (new prefix: nothing recorded yet).
    w2 = Wiring(
        Settings(
            redis_url=stack.redis_url,
            eth_rpc_url=stack.rpc_url,
            chain_id=stack.config.chain_id,
            key_prefix=scratch + "2",
            trace_internal_transfers=False,
        )
    )
    w2.redis.sunionstore(w2.keyspace.watched, [f"{PREFIX}:watched"])
    w2.scanner.process_block(heights[0])
    for h in heights[1:]:
        t0 = time.perf_counter()
        w2.scanner.process_block(h)
        timings["process_block"].append(time.perf_counter() - t0)
    for prefix in (scratch, scratch + "2"):
        drop_prefix(w.redis, prefix)
    return {
        name: {"mean_ms": 1000 * statistics.fmean(v), "p50_ms": 1000 * statistics.median(v)}
        for name, v in timings.items()
    }


def drop_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(f"{prefix}:*", count=10_000))
    for chunk in chunked(keys, 1000):
        client.delete(*chunk)


def batched_in_process(
    stack: Stack, heights: list[int], threads: int = 2, per_fetch: int = 25
) -> dict[str, float]:
    """What the same domain code reaches without a task per height: `threads` threads, each fetching
    `per_fetch` heights per JSON-RPC batch (RpcClient.fetch_blocks) and recording every block
    (DepositScanner._record) under a scratch key prefix. A what-if, not the system."""

    scratch = f"{PREFIX}batch"
    wirings = [
        _scratch_wiring(stack, scratch)
        for _ in range(threads)
    ]
    wirings[0].redis.sunionstore(wirings[0].keyspace.watched, [f"{PREFIX}:watched"])
    for w in wirings:
        w.scanner.process_block(heights[0])  # warm
    chunks = list(chunked(heights[1:], per_fetch))
    work: queue.Queue[Sequence[int]] = queue.Queue()
    for chunk in chunks:
        work.put(chunk)

    def run(w: Any) -> None:
        while True:
            try:
                chunk = work.get_nowait()
            except queue.Empty:
                return
            for bundle in w.rpc.fetch_blocks(chunk, with_traces=False):
                w.scanner._record(bundle)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, wirings))
    seconds = time.perf_counter() - started
    drop_prefix(wirings[0].redis, scratch)
    return {
        "threads": threads,
        "heights_per_fetch": per_fetch,
        "blocks": len(heights) - 1,
        "blocks_per_s": (len(heights) - 1) / seconds,
    }


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time (user + system) of every stack process so far, by process group (a worker's pool
    children are in its group), and of this benchmark process."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {stack.pid(name): name for name in stack.status() if stack.alive(name)}
    totals: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, pgrp = int(entry), int(fields[2])
        used = (int(fields[11]) + int(fields[12])) / tick
        if pid == os.getpid():
            totals["bench (this process)"] = used
        elif pgrp in groups:
            name = groups[pgrp]
            if name == "worker" and pid != pgrp:
                name = "worker (pool children)"
            elif name == "worker":
                name = "worker (main)"
            totals[name] = totals.get(name, 0.0) + used
    return totals


def cpu_share(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores used by each process over the interval (2.0 = both cores of this machine)."""
    return {
        name: round((after[name] - before.get(name, 0.0)) / seconds, 3)
        for name in sorted(after, key=lambda n: before.get(n, 0.0) - after[n])
    }


def cpu_per_block(before: dict[str, float], after: dict[str, float], blocks: int) -> dict[str, float]:
    """CPU milliseconds each process spent per block over the interval (idle ones left out)."""
    spent = {name: (after[name] - before.get(name, 0.0)) * 1000 / blocks for name in after}
    return {name: round(ms, 3) for name, ms in sorted(spent.items(), key=lambda kv: -kv[1]) if ms > 0.01}


# ---------------------------------------------------------------- Kafka


class DepositListener:
    """Reads `deposit.seen` from partition 0 of `transaction` from the beginning, in a thread, and
    remembers when each deposit id / tx hash first arrived (this process's perf_counter)."""

    def __init__(self, bootstrap: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=20,
            max_poll_records=5000,
        )
        tp = TopicPartition(TOPIC, 0)
        self._consumer.assign([tp])
        self._consumer.seek_to_beginning(tp)
        self.lock = threading.Lock()
        self.events: list[tuple[float, dict[str, Any]]] = []  # (arrival, payload) of every deposit.seen
        self.by_tx: dict[str, float] = {}
        self.messages = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batches = self._consumer.poll(timeout_ms=50)
                now = time.perf_counter()
                for records in batches.values():
                    for record in records:
                        event = orjson.loads(record.value)
                        with self.lock:
                            self.messages += 1
                            if event.get("type") == "deposit.seen":
                                payload = event["payload"]
                                self.events.append((now, payload))
                                self.by_tx.setdefault(payload["tx_hash"], now)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc

    def seen(self, since: float = 0.0, heights: tuple[int, int] | None = None) -> tuple[int, int, float]:
        """(distinct deposit ids, events, last arrival) of deposit.seen events arrived after `since`."""
        if self.error:
            raise RuntimeError(f"kafka listener failed: {self.error!r}")
        with self.lock:
            chosen = [
                (t, p)
                for t, p in self.events
                if t >= since and (heights is None or heights[0] <= p["block_number"] <= heights[1])
            ]
        return (
            len({p["deposit_id"] for _, p in chosen}),
            len(chosen),
            max((t for t, _ in chosen), default=0.0),
        )

    def arrival(self, tx_hash: str) -> float | None:
        with self.lock:
            return self.by_tx.get(tx_hash)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


# ---------------------------------------------------------------- the system


def kick_relay(stack: Stack) -> None:
    """Start the bridge's relay now, as it runs in steady state (beat's watchdog would only send the
    first one BRIDGE_INTERVAL after it starts)."""
    from celery import Celery

    prefix = stack.config.key_prefix
    app = Celery("bench", broker=stack.redis_url)
    app.conf.broker_transport_options = {"visibility_timeout": 3600, "global_keyprefix": f"{prefix}:celery:"}
    app.send_task("tasks.bridge.relay_outbox", queue="bridge")
    app.close()


def task_stats(stack: Stack, offset: int = 0) -> dict[str, Any]:
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


def log_size(stack: Stack, name: str) -> int:
    path = stack.logs / f"{name}.log"
    return len(path.read_text(errors="replace")) if path.exists() else 0


def run_system(
    stack: Stack,
    listener: DepositListener,
    r: redis.Redis,
    last: int,
    expected: int,
    heights: tuple[int, int],
    after_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Start worker + bridge, then beat (clock starts); stop the clock when the watermark reaches `last`
    and every expected deposit.seen of `heights` was read from Kafka."""
    watermark_key = f"{stack.config.key_prefix}:blocks:watermark"
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
        wm = r.get(watermark_key)
        now = time.perf_counter()
        if watermark_at is None and wm is not None and int(wm) >= last:
            watermark_at = now
        distinct, events, last_event = listener.seen(started, heights)
        if watermark_at is not None and distinct >= expected:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"system did not finish in {SYSTEM_TIMEOUT:.0f}s: watermark {wm!r} of {last}, "
                f"{distinct} of {expected} deposits\n{stack.tail('worker')}"
            )
        for name in ("worker", "bridge", "beat"):
            if not stack.alive(name):
                raise RuntimeError(f"{name} died:\n{stack.tail(name)}")
        time.sleep(0.02)
    cpu_after = cpu_seconds(stack)
    seconds = max(watermark_at, last_event) - started
    if distinct != expected:
        raise RuntimeError(f"{distinct} deposit events arrived, {expected} expected")
    blocks = heights[1] - heights[0] + 1
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
        "worker_tasks": task_stats(stack, worker_log_offset),
        "cores_used": cpu_share(cpu_before, cpu_after, time.perf_counter() - started),
        "cpu_ms_per_block": cpu_per_block(cpu_before, cpu_after, blocks),
    }


def measure_latency(
    rpc: Rpc, listener: DepositListener, chain: dict[str, Any], targets: list[bytes]
) -> dict[str, Any]:
    """Deposits at 1 s block time: t_kafka - t_mined, t_mined from eth_getTransactionReceipt polled every 20 ms."""
    rpc.call("anvil_setIntervalMining", [1])
    account, index = chain["accounts"][-1], SENDERS - 1
    latencies, send_to_kafka = [], []
    try:
        for target in targets:
            signed = account.sign_transaction(
                {
                    "chainId": chain["chain_id"],
                    "nonce": chain["nonces"][index],
                    "to": target,
                    "value": 10**15,
                    "gas": 21_000,
                    **GAS_PRICE,
                }
            )
            chain["nonces"][index] += 1
            tx_hash = "0x" + bytes(signed.hash).hex()
            t_sent = time.perf_counter()
            rpc.call("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
            deadline = time.monotonic() + 30
            while rpc.call("eth_getTransactionReceipt", [tx_hash]) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{tx_hash} not mined in 30 s")
                time.sleep(0.02)
            t_mined = time.perf_counter()
            while (t_kafka := listener.arrival(tx_hash)) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no deposit.seen for {tx_hash} in 30 s")
                time.sleep(0.002)
            latencies.append(1000 * (t_kafka - t_mined))
            send_to_kafka.append(1000 * (t_kafka - t_sent))
    finally:
        rpc.call("anvil_setIntervalMining", [0])
    latencies.sort()
    return {
        "samples": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies),
        "max_ms": latencies[-1],
        "min_ms": latencies[0],
        "send_to_kafka_p50_ms": percentile(sorted(send_to_kafka), 50),
    }


def percentile(ordered: list[float], p: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main() -> None:
    rng = random.Random(SEED)
    home = Path(tempfile.mkdtemp(prefix="wallet-bench-blocks-"))
    stack = Stack(home, StackConfig.fresh(prefer_defaults=False, key_prefix=PREFIX))
    results: dict[str, Any] = {
        "config": {
            "blocks": BLOCKS,
            "txs_per_block": TXS,
            "watched": WATCHED,
            "worker_concurrency": 2,
            "required_confirmations": REQUIRED_CONFIRMATIONS,
            "scan_interval_s": 0.25,
            "scan_max_new_per_tick": 2000,
        }
    }
    listener = None
    try:
        stack.start(["redis", "kafka", "node"])
        r = redis.Redis.from_url(stack.redis_url)
        rpc = Rpc(stack.rpc_url)

        watched = [rng.randbytes(20) for _ in range(WATCHED)]
        print(f"generating {BLOCKS} blocks x {TXS} transactions ...", flush=True)
        chain = generate_chain(rpc, watched[: WATCHED // 2], rng)
        first, last, expected = chain["first"], chain["last"], chain["expected"]
        ntx = BLOCKS * TXS
        results["generation"] = {
            "seconds": chain["seconds"],
            "blocks_per_s": BLOCKS / chain["seconds"],
            "tx_per_s": ntx / chain["seconds"],
            "first_block": first,
            "last_block": last,
            "eth_transfers": chain["kinds"]["eth"],
            "erc20_transfers": chain["kinds"]["erc20"],
            "deposits": len(expected),
        }
        print(
            f"generated blocks {first}..{last} ({ntx} tx, {len(expected)} to watched addresses) "
            f"in {chain['seconds']:.1f} s",
            flush=True,
        )

        results["config"]["watched_setup_s"] = add_watched(r, f"{PREFIX}:watched", watched)

        heights = list(range(first, last + 1))
        passes = []
        for _ in range(RAW_PASSES):
            cpu_before = cpu_seconds(stack)
            one = raw_ceiling(stack.rpc_url, heights)
            one["cpu_ms_per_block"] = cpu_per_block(cpu_before, cpu_seconds(stack), len(heights))
            passes.append(one)
        raw = max(passes, key=lambda p: p["blocks_per_s"])
        results["raw"] = {**raw, "passes_blocks_per_s": [p["blocks_per_s"] for p in passes]}
        print(f"raw ceiling: {raw['blocks_per_s']:.1f} blocks/s, {raw['tx_per_s']:.0f} tx/s", flush=True)

        results["profile_one_block"] = profile_block(stack, heights[: PROFILE_BLOCKS + 1])
        print(
            "one block in process (mean ms): "
            + ", ".join(f"{k} {v['mean_ms']:.2f}" for k, v in results["profile_one_block"].items()),
            flush=True,
        )
        results["what_if_batched_in_process"] = batched_in_process(stack, heights)
        print(
            f"what-if, 2 threads x 25 heights per fetch, in process: "
            f"{results['what_if_batched_in_process']['blocks_per_s']:.1f} blocks/s",
            flush=True,
        )

        stack.config.extra_env.update(
            {
                "WALLET_START_HEIGHT": str(first),
                "WALLET_REQUIRED_CONFIRMATIONS": str(REQUIRED_CONFIRMATIONS),
                "WALLET_TRACE_INTERNAL_TRANSFERS": "false",
                "WALLET_SCAN_MAX_NEW_PER_TICK": "2000",
                "WALLET_SCAN_INTERVAL_SECONDS": "0.25",
                # Experiments: BENCH_WALLET_SCAN_FETCH_PARALLELISM=3 sets WALLET_SCAN_FETCH_PARALLELISM.
                **{k.removeprefix("BENCH_"): v for k, v in os.environ.items() if k.startswith("BENCH_WALLET_")},
            }
        )
        listener = DepositListener(stack.kafka_bootstrap)
        system = run_system(stack, listener, r, last, len(expected), (first, last))
        system["tx_per_s"] = ntx / system["seconds"]
        system["ratio_vs_raw"] = system["blocks_per_s"] / raw["blocks_per_s"]
        # Beat is a long-running process: its interpreter start-up (~2-3 s here) is no per-block work.
        system["ratio_vs_raw_after_beat_ready"] = system["blocks_per_s_after_beat_ready"] / raw["blocks_per_s"]
        tasks = system["worker_tasks"]
        if tasks.get("tasks"):
            system["worker_busy_share"] = tasks["sum_s"] / (2 * system["seconds"])
        results["system"] = system
        print(
            f"system: {system['blocks_per_s']:.1f} blocks/s, {system['tx_per_s']:.0f} tx/s, "
            f"ratio {system['ratio_vs_raw']:.2f} ({system['ratio_vs_raw_after_beat_ready']:.2f} from beat ready); "
            f"{system['deposit_events_distinct']} deposit events "
            f"(of {len(expected)})",
            flush=True,
        )

        if LATENCY_SAMPLES:
            targets = rng.sample(watched[WATCHED // 2 :], LATENCY_SAMPLES)
            results["latency_1s_blocks"] = measure_latency(rpc, listener, chain, targets)
            lat = results["latency_1s_blocks"]
            print(
                f"latency mined -> kafka: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms", flush=True
            )

        if TRACED_BLOCKS:
            n = min(TRACED_BLOCKS, BLOCKS)
            traced_heights = heights[:n]
            traced_raw = raw_ceiling(stack.rpc_url, traced_heights, with_traces=True)
            for name in ("beat", "worker", "bridge"):
                stack.stop(name)
                # Readiness is read from the log: start the new processes on fresh ones.
                (stack.logs / f"{name}.log").rename(stack.logs / f"{name}.untraced.log")
            # A second deployment on the same infrastructure: fresh key prefix, fresh Celery queues.
            stack.config.key_prefix = PREFIX + "t"
            stack.config.extra_env["WALLET_TRACE_INTERNAL_TRANSFERS"] = "true"
            add_watched(r, f"{stack.config.key_prefix}:watched", watched)
            want = sum(1 for h in expected.values() if h <= traced_heights[-1])
            traced = run_system(
                stack, listener, r, traced_heights[-1], want, (traced_heights[0], traced_heights[-1])
            )
            traced["tx_per_s"] = n * TXS / traced["seconds"]
            traced["raw"] = traced_raw
            traced["ratio_vs_raw_traced"] = traced["blocks_per_s"] / traced_raw["blocks_per_s"]
            results["traced"] = traced
            print(
                f"traced ({n} blocks): raw {traced_raw['blocks_per_s']:.1f} blocks/s, system "
                f"{traced['blocks_per_s']:.1f} blocks/s, ratio {traced['ratio_vs_raw_traced']:.2f}",
                flush=True,
            )

        if PROVIDER_BLOCKS:
            results["provider"] = behind_provider(stack, listener, r, heights[: min(PROVIDER_BLOCKS, BLOCKS)],
                                                  expected, watched)
            p = results["provider"]
            print(f"behind a provider ({p['limits']}): plain {p['plain']['blocks_per_s']:.2f} blocks/s, "
                  f"system {p['system']['blocks_per_s']:.2f} blocks/s, ratio {p['ratio']:.2f}", flush=True)

        if PINNED_BLOCKS and provider.can_pin():
            results["pinned"] = pinned(stack, listener, r, heights[: min(PINNED_BLOCKS, BLOCKS)], expected, watched)
            p = results["pinned"]
            print(f"pinned (node on core 0, the rest on core 1): raw {p['raw']['blocks_per_s']:.1f} blocks/s, "
                  f"system {p['system']['blocks_per_s']:.1f} blocks/s, ratio {p['ratio']:.2f}", flush=True)

        if FSYNC_BLOCKS:
            results["fsync"] = fsync_cost(stack, listener, r, heights[: min(FSYNC_BLOCKS, BLOCKS)], expected, watched)
            f = results["fsync"]
            print(f"fsync ({f['blocks']} blocks): everysec {f['everysec']['blocks_per_s']:.1f} blocks/s, "
                  f"always {f['always']['blocks_per_s']:.1f} blocks/s, ratio always/everysec "
                  f"{f['ratio_always_vs_everysec']:.2f}", flush=True)

        save_results("blocks", results)
    finally:
        if listener is not None:
            listener.close()
        stack.down()
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"logs kept in {stack.logs}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()


def _next_deployment(stack: Stack, r: redis.Redis, suffix: str, watched: list[bytes], env: dict[str, str]) -> None:
    """Stop the system's processes and set up a second deployment on the same infrastructure and
    chain: fresh key prefix (fresh state and Celery queues), the same watched addresses."""
    for name in ("beat", "worker", "bridge"):
        stack.stop(name)
        # Readiness is read from the log: start the new processes on fresh ones.
        log = stack.logs / f"{name}.log"
        if log.exists():
            log.rename(stack.logs / f"{name}.{stack.config.key_prefix}.log")
    stack.config.key_prefix = PREFIX + suffix
    stack.config.extra_env.update({"WALLET_TRACE_INTERNAL_TRANSFERS": "false", **env})
    add_watched(r, f"{stack.config.key_prefix}:watched", watched)


def behind_provider(stack: Stack, listener: DepositListener, r: redis.Redis, heights: list[int],
                    expected: dict[str, int], watched: list[bytes]) -> dict[str, Any]:
    want = sum(1 for h in expected.values() if h <= heights[-1])
    with provider.provider_proxy(stack) as proxy:
        plain = provider.plain_fetch(proxy.url, heights)
        proxy.reset_stats()
        _next_deployment(stack, r, "p", watched, provider.system_env(proxy))
        system = run_system(stack, listener, r, heights[-1], want, (heights[0], heights[-1]))
        stats = proxy.stats()
        for key in provider.system_env(proxy):
            stack.config.extra_env.pop(key, None)
    return {
        "limits": f"batch cap {provider.PROVIDER_BATCH}, {provider.PROVIDER_RPS:.0f} calls/s, no eth_getBlockReceipts",
        "plain": plain, "system": system, "ratio": system["blocks_per_s"] / plain["blocks_per_s"],
        "ratio_after_beat_ready": system["blocks_per_s_after_beat_ready"] / plain["blocks_per_s"],
        "provider_saw": {"calls": stats.calls, "rate_limited": stats.rate_limited,
                         "batches_too_large": stats.batches_too_large, "bad_gateway": stats.bad_gateway},
    }


def fsync_cost(stack: Stack, listener: DepositListener, r: redis.Redis, heights: list[int],
               expected: dict[str, int], watched: list[bytes]) -> dict[str, Any]:
    """The same blocks scanned with Redis at appendfsync everysec, then always (the default)."""
    want = sum(1 for h in expected.values() if heights[0] <= h <= heights[-1])
    runs: dict[str, dict[str, Any]] = {}
    try:
        for policy in ("everysec", "always"):
            r.config_set("appendfsync", policy)
            # The gate off for both, so that the fsync is the only difference between the runs.
            _next_deployment(stack, r, f"f{policy[0]}", watched, {"WALLET_REDIS_DURABILITY": "none"})
            runs[policy] = run_system(stack, listener, r, heights[-1], want, (heights[0], heights[-1]))
    finally:
        r.config_set("appendfsync", "always")
        stack.config.extra_env.pop("WALLET_REDIS_DURABILITY", None)
    return {"blocks": len(heights), **runs,
            "ratio_always_vs_everysec": runs["always"]["blocks_per_s"] / runs["everysec"]["blocks_per_s"],
            "ratio_always_vs_everysec_after_beat_ready": runs["always"]["blocks_per_s_after_beat_ready"]
            / runs["everysec"]["blocks_per_s_after_beat_ready"]}


def pinned(stack: Stack, listener: DepositListener, r: redis.Redis, heights: list[int],
           expected: dict[str, int], watched: list[bytes]) -> dict[str, Any]:
    want = sum(1 for h in expected.values() if h <= heights[-1])
    node, rest = {0}, {1}
    own = os.sched_getaffinity(0)
    try:
        provider.pin(stack, ["node"], node)
        provider.pin(stack, ["redis", "kafka"], rest)
        os.sched_setaffinity(0, rest)  # the raw client and this process's Kafka listener
        raw = max((raw_ceiling(stack.rpc_url, heights) for _ in range(RAW_PASSES)), key=lambda p: p["blocks_per_s"])
        _next_deployment(stack, r, "pin", watched, {})
        system = run_system(stack, listener, r, heights[-1], want, (heights[0], heights[-1]),
                            after_start=lambda: provider.pin(stack, ["worker", "bridge", "beat"], rest))
    finally:
        os.sched_setaffinity(0, own)
        provider.pin(stack, ["node", "redis", "kafka", "worker", "bridge", "beat"], own)
    return {"raw": raw, "system": system, "ratio": system["blocks_per_s"] / raw["blocks_per_s"],
            "ratio_after_beat_ready": system["blocks_per_s_after_beat_ready"] / raw["blocks_per_s"]}


def _scratch_wiring(stack: Stack, key_prefix: str):
    """Domain objects on the stack's servers under a scratch prefix: profiling leaves the
    measured system's state alone."""
    from wallet.settings import Settings
    from wallet.wiring import Wiring

    return Wiring(Settings(
        redis_url=stack.redis_url, eth_rpc_url=stack.rpc_url, chain_id=stack.config.chain_id,
        key_prefix=key_prefix, trace_internal_transfers=False,
        required_confirmations=REQUIRED_CONFIRMATIONS,
    ))
