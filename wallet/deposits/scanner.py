"""Scanning blocks for deposits: idempotent per block, reorg-aware, with confirmations.

- `process_block(h)`: fetch the block, find deposits to watched addresses, and record them with the
  block's hash in one MULTI/EXEC. A block already recorded with the same hash changes nothing; one
  recorded with another hash (a reorg) has its deposits retracted and the new block's recorded.
- `plan(head)`: the heights to hand to process_block tasks: new heights, heights whose task was
  lost, and recent heights whose hash the chain no longer has.
- `confirm(head)`: deposits K deep in blocks the chain still has get `deposit.confirmed`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import redis

from wallet.chain.health import ChainHealth
from wallet.chain.model import BlockBundle, BlockRef
from wallet.chain.rpc import RpcClient
from wallet.deposits.finder import find_deposits
from wallet.deposits.model import (
    ETH,
    ETH_DECIMALS,
    EVENT_DEPOSIT_CONFIRMED,
    EVENT_DEPOSIT_REVERTED,
    EVENT_DEPOSIT_SEEN,
    Deposit,
    TokenInfo,
    deposit_event,
)
from wallet.deposits.tokens import TokenDirectory
from wallet.errors import InvalidCommand
from wallet.metrics import CHAIN_HEAD, DEPOSITS, NO_METRICS, SCAN_BLOCKS, SCAN_TRANSACTIONS, Metrics
from wallet.outbox import Outbox
from wallet.state.blocks import BlockLedger
from wallet.state.deposits import STATUS_CONFIRMED, STATUS_REVERTED, STATUS_SEEN, DepositBook
from wallet.state.keyspace import Keyspace
from wallet.state.locks import Locks

INVALID_RESCAN = "invalid_rescan"
ETH_INFO = TokenInfo(ETH, ETH_DECIMALS)


@dataclass(frozen=True)
class BlockResult:
    height: int
    block_hash: str
    deposits: int
    reverted: int
    already_done: bool


@dataclass(frozen=True)
class ScanStatus:
    head: int | None
    watermark: int | None
    scheduled: int | None
    inflight: int
    lag: int | None
    # Heights recorded without internal transfers, and why ("no_tracer", "pruned_state").
    untraced: dict[int, str]
    # Heights the node could not serve: {height: {code, message, since}}.
    unreadable: dict[int, dict]


class DepositScanner:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, rpc: RpcClient, tokens: TokenDirectory,
                 outbox: Outbox, chain_id: int, required_confirmations: int, reorg_margin: int,
                 trace_internal: bool, rpc_factory: Callable[[], RpcClient] | None = None,
                 fetch_parallelism: int = 1, health: ChainHealth | None = None,
                 metrics: Metrics = NO_METRICS) -> None:
        self._redis = client
        self._metrics = metrics
        self._rpc_factory = rpc_factory
        self._fetch_parallelism = fetch_parallelism if rpc_factory is not None else 1
        self._pool: ThreadPoolExecutor | None = None
        self._hot_wallet: str | None = None
        self._thread_clients = threading.local()
        self._pool_clients: list[RpcClient] = []
        self._ks = keyspace
        self._rpc = rpc
        self._tokens = tokens
        self._outbox = outbox
        self._ledger = BlockLedger(client, keyspace)
        self._book = DepositBook(client, keyspace)
        self._locks = Locks(client, keyspace)
        self._chain_id = chain_id
        self._k = required_confirmations
        self._window = required_confirmations + reorg_margin
        self._trace = trace_internal
        self._health = health
        self._traced_ok: bool | None = None  # what the last block told: tracing works, or not

    @property
    def ledger(self) -> BlockLedger:
        return self._ledger

    # ------------------------------------------------------------------ one block
    def process_block(self, height: int) -> BlockResult:
        [result] = self.process_blocks([height])
        return result

    def process_blocks(self, heights: list[int], relearn: bool = False) -> list[BlockResult]:
        """Scan several heights, recording each block on its own. Catching up is bound by the
        node, so the node is kept busy: the group is fetched in chunks, `fetch_parallelism` of them
        in flight while the blocks already fetched are recorded. `relearn`: ask the node again what
        it offers (a rescan after it was given a tracer) instead of trusting what was learned."""
        if relearn:
            for client in (self._rpc, *self._pool_clients):
                client.forget_capabilities()
        results = []
        for bundles in self._fetch_ahead(sorted(set(heights)), self._trace):
            for bundle in bundles:
                # Found and described (token lookups may ask the node) before the lock: under it,
                # only Redis is read and written, so its lease can be short.
                found = self._from_outside(find_deposits(bundle, self._book.watched_among))
                tokens = {d.asset: self._token_info(d.asset) for d in found}
                # One writer per height: a redelivered duplicate waits, then finds the work done.
                with self._locks.block(bundle.number):
                    results.append(self._record(bundle, found, tokens))
                self._announce_tracing(bundle)
        return results

    def _announce_tracing(self, bundle: BlockBundle) -> None:
        if self._health is None or not self._trace:
            return
        if bundle.internal_transfers is None:
            self._health.degraded(bundle.untraced_reason or "no_tracer", bundle.number)
        elif not self._traced_ok:
            # Tracing works (again): a later gap is a new episode, announced again.
            self._health.tracing_restored()
        self._traced_ok = bundle.internal_transfers is not None

    def _fetch_ahead(self, heights: list[int], with_traces: bool) -> Iterator[list[BlockBundle]]:
        """The blocks of `heights` in height order, chunk by chunk, fetching ahead (profiled:
        fetch-then-record left the node idle a third of the time while both workers recorded)."""
        if self._fetch_parallelism == 1 or len(heights) == 1:
            yield self._rpc.fetch_blocks(heights, with_traces=with_traces)
            return
        size = -(-len(heights) // (2 * self._fetch_parallelism))
        chunks_left = iter([heights[i : i + size] for i in range(0, len(heights), size)])
        pool = self._fetch_pool()
        in_flight = deque(pool.submit(self._fetch_in_pool, chunk, with_traces)
                          for chunk in islice(chunks_left, self._fetch_parallelism))
        while in_flight:
            bundles = in_flight.popleft().result()
            following = next(chunks_left, None)
            if following is not None:
                in_flight.append(pool.submit(self._fetch_in_pool, following, with_traces))
            yield bundles

    def _fetch_in_pool(self, heights: list[int], with_traces: bool) -> list[BlockBundle]:
        # One client per thread: a requests.Session is not made to be shared between threads.
        client = getattr(self._thread_clients, "rpc", None)
        if client is None:
            assert self._rpc_factory is not None
            client = self._thread_clients.rpc = self._rpc_factory()
            self._pool_clients.append(client)
        return client.fetch_blocks(heights, with_traces=with_traces)

    def _fetch_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._fetch_parallelism,
                                            thread_name_prefix="block-fetch")
        return self._pool

    def _record(self, bundle: BlockBundle, found: list[Deposit], tokens: dict[str, TokenInfo]) -> BlockResult:
        height = bundle.number
        previous = self._ledger.scanned_hash(height)
        untraced = self._trace and bundle.internal_transfers is None
        known: set[str] = set()
        if previous == bundle.hash:
            # Done before; unless it was recorded without traces and now has them (a rescan against
            # a tracing node), in which case only the internal transfers are new.
            if untraced or not self._trace or not self._ledger.untraced_reason(height):
                pipe = self._redis.pipeline(transaction=True)
                self._ledger.finish_in(pipe, height, bundle.hash)
                pipe.execute()
                self._count_block(bundle, [])
                return BlockResult(height, bundle.hash, 0, 0, already_done=True)
            known = self._book.block_deposit_ids(height)

        deposits = [d for d in found if d.deposit_id not in known]
        replaced = previous if previous is not None and not known else None  # another block was here
        def write(pipe: redis.client.Pipeline) -> list[tuple[Deposit, str]]:
            # Run again when a record read changed meanwhile (another height's task, a confirmation).
            retracted = self._to_retract(pipe, height, replaced, bundle.hash, deposits)
            pipe.multi()
            self._record_in(pipe, bundle, deposits, tokens, retracted, untraced, known)
            return retracted

        retracted = self._redis.transaction(write, value_from_callable=True)
        for old, _status in retracted:
            self._metrics.inc(DEPOSITS, kind=old.kind, state=STATUS_REVERTED)
        self._count_block(bundle, deposits)
        return BlockResult(height, bundle.hash, len(deposits), len(retracted), already_done=False)

    def _to_retract(self, pipe: redis.client.Pipeline, height: int, replaced: str | None, new_hash: str,
                    deposits: list[Deposit]) -> list[tuple[Deposit, str]]:
        """The recorded deposits that recording this block retracts, their records WATCHed on `pipe`:
        those of the block it replaces (`replaced`), and any found here but still recorded from
        another block (the reorg moved the transaction here from a height not scanned again yet:
        that block is gone from the chain too). A deposit of the replaced block that was recorded
        since in another block (moved, its new height scanned first) is not retracted: its one
        record (a deposit id stays the same at another height) is the new block's now."""
        old_ids = self._book.block_deposit_ids(height) if replaced is not None else set()
        found_ids = {d.deposit_id for d in deposits}
        records = self._book.watch_recorded(pipe, old_ids | found_ids)
        return [(deposit, status) for deposit_id, (deposit, status) in sorted(records.items())
                if deposit.block_hash != new_hash and (deposit.block_hash == replaced or deposit_id in found_ids)]

    def _record_in(self, pipe: redis.client.Pipeline, bundle: BlockBundle, deposits: list[Deposit],
                   tokens: dict[str, TokenInfo], retracted: list[tuple[Deposit, str]], untraced: bool,
                   known: set[str]) -> None:
        height = bundle.number
        for old in retracted:
            self._retract_in(pipe, height, old)
        if not known:
            self._book.forget_block_in(pipe, height)
        if untraced:
            self._ledger.mark_untraced_in(pipe, height, bundle.untraced_reason or "no_tracer")
        else:
            self._ledger.clear_untraced_in(pipe, height)
        for deposit in deposits:
            self._book.record_in(pipe, deposit, height)
            self._ledger.stage_in(pipe, height, deposit_event(
                self._chain_id, EVENT_DEPOSIT_SEEN, deposit, tokens[deposit.asset], 1, self._k))
        self._ledger.finish_in(pipe, height, bundle.hash)

    def _count_block(self, bundle: BlockBundle, deposits: list[Deposit]) -> None:
        """Metrics: counted in memory, written to Redis by the recorder's own thread (no round trip here)."""
        metrics = self._metrics
        if not metrics.enabled:
            return
        metrics.inc(SCAN_BLOCKS)
        metrics.inc(SCAN_TRANSACTIONS, len(bundle.transactions))
        for deposit in deposits:
            metrics.inc(DEPOSITS, kind=deposit.kind, state=STATUS_SEEN)

    def _retract_in(self, pipe: redis.client.Pipeline, height: int, recorded: tuple[Deposit, str]) -> None:
        deposit, status = recorded
        # A confirmed deposit reorged away is deeper than K: still retracted, loudly (the event says
        # it had been confirmed), because crediting a deposit that no longer exists is worse.
        self._book.retract_in(pipe, deposit.deposit_id)
        # Staged with the block being recorded (`height`), ahead of its seen events: a moved deposit's
        # old block may be at another height, already released, whose staged events would wait.
        self._ledger.stage_in(pipe, height, deposit_event(
            self._chain_id, EVENT_DEPOSIT_REVERTED, deposit, self._token_info(deposit.asset), 0, self._k,
            meta={"was_confirmed": True} if status == STATUS_CONFIRMED else None))

    def _from_outside(self, deposits: list[Deposit]) -> list[Deposit]:
        """Drop our own money movements: the hot wallet topping a deposit address up with gas for
        a token sweep is not a customer's deposit, and crediting it would pay the customer twice."""
        if not deposits:
            return deposits
        if self._hot_wallet is None:
            hot = self._redis.get(self._ks.hot_wallet)  # made on first use; never changes after
            self._hot_wallet = hot.decode().lower() if hot is not None else None
        return [d for d in deposits if d.sender != self._hot_wallet]

    def _token_info(self, asset: str) -> TokenInfo:
        return ETH_INFO if asset == ETH else self._tokens.info(asset)

    # ------------------------------------------------------------------ scheduling
    def plan(self, head: BlockRef, *, start_height: int | None, max_new: int, stale_seconds: float) -> SchedulePlan:
        """Heights to hand out now. The caller enqueues them, then calls `mark_scheduled(plan)`."""
        self._ledger.initialize(head.number if start_height is None else start_height)
        self._metrics.set(CHAIN_HEAD, head.number, chain_id=str(self._chain_id))
        scheduled = self._ledger.scheduled_height()
        assert scheduled is not None
        new = list(range(scheduled + 1, min(head.number, scheduled + max_new) + 1))
        lost = self._ledger.stale_inflight(stale_seconds)
        reorged, checked = self.reorged_heights(head)
        return SchedulePlan(sorted(set(new) | set(lost) | set(reorged)), head.hash, checked)

    def mark_scheduled(self, plan: SchedulePlan) -> None:
        """After enqueueing: the heights are handed out, and the reorg check they came from is done.
        In this order: a crash in between repeats the check, never skips it."""
        self._ledger.mark_scheduled(plan.heights)
        self._ledger.mark_checked(plan.head_hash, plan.checked)

    def reorged_heights(self, head: BlockRef) -> tuple[list[int], list[int]]:
        """Recent heights where the chain's block is not the one we scanned, and the heights whose
        recording this check covered.

        A block's hash commits to all its ancestors, so while the head block is the one of the
        last check, only heights recorded since then can hold a block of another branch (a task
        that fetched just before a reorg): only those are asked of the node. Otherwise (a new head)
        the whole window is. On an idle chain that is no call at all; while catching up, a few."""
        low = max(0, head.number - self._window)
        unchecked = self._ledger.unchecked_heights()
        if head.hash == self._ledger.checked_head():
            candidates = [h for h in unchecked if low <= h <= head.number]
        else:
            candidates = list(range(low, head.number + 1))
        stored = {h: v for h, v in self._ledger.scanned_hashes(candidates).items() if v}
        if not stored:
            return [], unchecked
        refs = self._rpc.block_refs(sorted(stored))
        # A height the node no longer has (chain rolled back) is re-checked once it exists again.
        return [h for h, ours in stored.items() if refs.get(h) is not None and refs[h].hash != ours], unchecked

    # ------------------------------------------------------------------ confirmations
    def confirm(self, head: int) -> int:
        """Confirm deposits K deep whose block the chain still has and whose seen event is out."""
        watermark = self._ledger.watermark()
        if watermark is None:
            return 0
        # Every tick, not only when something is due: on a quiet chain the hashes would pile up.
        self._ledger.forget_hashes_below(watermark - self._window - 1)
        deepest = min(head - self._k + 1, watermark)
        due = self._book.unconfirmed_up_to(deepest)
        if not due:
            return 0
        heights = sorted({h for _, h in due})
        confirmed_kinds: list[str] = []
        with self._redis.pipeline(transaction=True) as pipe:
            # The records are WATCHed before the chain is asked: a rescan that retracts one of them
            # meanwhile (a reorg) makes this write fail, instead of confirming a deposit whose block
            # is gone; the next tick decides again.
            records = self._book.watch_recorded(pipe, [deposit_id for deposit_id, _ in due])
            refs = self._rpc.block_refs(heights)
            pipe.multi()
            for deposit_id, height in due:
                if deposit_id not in records:
                    continue
                deposit, _status = records[deposit_id]
                ref = refs.get(height)
                if ref is None or ref.hash != deposit.block_hash:
                    continue  # reorged: the rescan retracts it
                self._book.confirm_in(pipe, deposit_id)
                confirmed_kinds.append(deposit.kind)
                self._outbox.append(pipe, deposit_event(
                    self._chain_id, EVENT_DEPOSIT_CONFIRMED, deposit, self._token_info(deposit.asset),
                    head - height + 1, self._k))
            try:
                pipe.execute()
            except redis.WatchError:
                return 0
        confirmed = len(confirmed_kinds)
        for kind in confirmed_kinds:
            self._metrics.inc(DEPOSITS, kind=kind, state=STATUS_CONFIRMED)
        return confirmed

    def status(self, head: int | None) -> ScanStatus:
        watermark = self._ledger.watermark()
        return ScanStatus(
            head=head, watermark=watermark, scheduled=self._ledger.scheduled_height(),
            inflight=self._ledger.inflight_count(),
            lag=(head - watermark) if head is not None and watermark is not None else None,
            untraced=self._ledger.untraced(),
            unreadable=self._health.unreadable_heights() if self._health is not None else {},
        )

    def rescan_heights(self, head: int, start: int | None, end: int | None, untraced: bool) -> list[int]:
        """The heights a rescan hands out: `start..end` cut at the head, or the untraced ones.
        Raises InvalidCommand (`invalid_rescan`) for a range that is empty or wholly beyond the head:
        tasks for blocks that do not exist would only retry."""
        if untraced:
            return sorted(h for h in self._ledger.untraced() if h <= head)
        if start is None or end is None or start < 0 or end < start:
            raise InvalidCommand(INVALID_RESCAN, f"a rescan needs 0 <= start <= end, got {start}..{end}")
        if start > head:
            raise InvalidCommand(INVALID_RESCAN, f"height {start} is beyond the chain's head {head}",
                                 details={"head": head})
        return list(range(start, min(end, head) + 1))

    def report_unreadable(self, heights: list[int], code: str, message: str) -> int:
        """After repeated failures: each height the task could not read gets one `block.unreadable`
        event (per height and code). Returns how many were newly reported."""
        if self._health is None:
            return 0
        return sum(self._health.unreadable(h, code, message) for h in heights)


@dataclass(frozen=True)
class SchedulePlan:
    heights: list[int]  # to hand out: new, lost with a dead worker, reorged
    head_hash: str  # the head the reorg check was made against
    checked: list[int]  # recorded heights the check covered


def height_groups(heights: list[int], size: int) -> list[list[int]]:
    """Sorted heights cut into runs of consecutive heights, at most `size` long: one fetch each."""
    groups: list[list[int]] = []
    for height in sorted(heights):
        if groups and height == groups[-1][-1] + 1 and len(groups[-1]) < size:
            groups[-1].append(height)
        else:
            groups.append([height])
    return groups
