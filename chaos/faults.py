"""The fault injector: one fault at a time, chosen at random, each ended before the next, so the
time from its end to the system being caught up again is its own.

Kinds:
- process_kill: SIGKILL of one of our processes (workers, bridge, beat, consumer); the
  orchestrator restarts it.
- redis_kill: SIGKILL of Redis (state and Celery broker); restarted from its append-only file.
- broker_pause: SIGSTOP of the Celery broker (Redis), of Kafka (Tansu), or both, for 5-15 s. Tansu
  is never killed: it keeps topics in memory only.
- link_cut: one host's cable pulled for 5-30 s (packets dropped, connections hang).
- node_pause: SIGSTOP of the node for 5-15 s (no blocks, no answers).
- reorg: the last 1..K+2 blocks replaced (anvil_reorg). Transactions of the orphaned blocks go
  back in as a network's mempool would return them, some dropped: the depositor's last ones (its
  deposits vanish), and the system's only from blocks not yet K deep (a withdrawal already
  reported confirmed is not taken back; see README "What survives what").
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.chain import Depositor
from chaos.hosts import Network
from chaos.processes import APP_PROCESSES, Orchestrator

KINDS = ("process_kill", "redis_kill", "broker_pause", "link_cut", "node_pause", "reorg")
LINK_CUT_SECONDS = (5.0, 30.0)
PAUSE_SECONDS = (5.0, 15.0)


@dataclass
class FaultRecord:
    kind: str
    target: str
    started: float  # time.monotonic()
    ended: float
    ended_wall_ms: int
    head_at_end: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    recovery_seconds: float | None = None  # from its end to caught up; None: not within the limit


class Injector:
    def __init__(self, orchestrator: Orchestrator, network: Network, depositor: Depositor,
                 confirmations: int, hot_wallet: str, is_deposit: Callable[[str], bool], rng: random.Random) -> None:
        self.orchestrator = orchestrator
        self.network = network
        self.depositor = depositor
        self.k = confirmations
        self.hot_wallet = hot_wallet.lower()
        self.is_deposit = is_deposit  # whether a depositor's transaction (by hash) is a deposit of the load
        self.rng = rng
        self.current: str | None = None

    def schedule(self, count: int) -> list[str]:
        """Every kind once in a random order, then random kinds: a short run still sees each.
        Reorgs weigh double: they take no time, and each orphans only a few deposits."""
        first = list(KINDS)
        self.rng.shuffle(first)
        weighted = [*KINDS, "reorg"]
        return first + [self.rng.choice(weighted) for _ in range(max(0, count - len(KINDS)))]

    def inject(self, kind: str, max_seconds: float | None = None) -> FaultRecord:
        """Inject one fault of `kind` and end it; `max_seconds` caps a lasting fault's length."""
        started = time.monotonic()
        target, detail = getattr(self, f"_{kind}")(max_seconds)
        self.current = None
        ended = time.monotonic()
        return FaultRecord(kind, target, started, ended, int(time.time() * 1000), detail=detail)

    def _hold(self, low_high: tuple[float, float], cap: float | None) -> float:
        seconds = self.rng.uniform(*low_high)
        if cap is not None:
            seconds = max(low_high[0], min(seconds, cap))
        time.sleep(seconds)  # the fault's own length: nothing to wait for
        return seconds

    # ---- one method per kind: (target, detail)
    def _process_kill(self, _: float | None) -> tuple[str, dict[str, Any]]:
        name = self.rng.choice(APP_PROCESSES)
        self.current = f"SIGKILL {name}"
        self.orchestrator.kill(name)
        return name, {}

    def _redis_kill(self, _: float | None) -> tuple[str, dict[str, Any]]:
        self.current = "SIGKILL redis"
        self.orchestrator.kill("redis")
        return "redis", {}

    def _broker_pause(self, cap: float | None) -> tuple[str, dict[str, Any]]:
        which = self.rng.choice((("redis",), ("kafka",), ("redis", "kafka")))
        target = "+".join(which)
        self.current = f"SIGSTOP {target}"
        for name in which:
            self.orchestrator.pause(name)
        try:
            seconds = self._hold(PAUSE_SECONDS, cap)
        finally:
            for name in which:
                self.orchestrator.resume(name)
        return target, {"seconds": round(seconds, 1)}

    def _link_cut(self, cap: float | None) -> tuple[str, dict[str, Any]]:
        host = self.rng.choice(sorted(self.network.hosts))
        self.current = f"link of {host} cut"
        self.network.cut(host)
        try:
            seconds = self._hold(LINK_CUT_SECONDS, cap)
        finally:
            self.network.restore(host)
        return host, {"seconds": round(seconds, 1)}

    def _node_pause(self, cap: float | None) -> tuple[str, dict[str, Any]]:
        self.current = "SIGSTOP node"
        self.orchestrator.pause("node")
        try:
            seconds = self._hold(PAUSE_SECONDS, cap)
        finally:
            self.orchestrator.resume("node")
        return "node", {"seconds": round(seconds, 1)}

    def _reorg(self, _: float | None) -> tuple[str, dict[str, Any]]:
        depth = self.rng.randint(1, self.k + 2)
        self.current = f"reorg depth {depth}"
        with self.depositor.lock:
            self._wait_depositor_mined()
            head = int(self.depositor.w3.eth.block_number)
            depth = min(depth, head - 1)
            blocks = [self.depositor.w3.eth.get_block(h, full_transactions=True)
                      for h in range(head - depth + 1, head + 1)]
            pairs, dropped = self._replay(blocks, head)
            self.depositor.rpc("anvil_reorg", [depth, pairs])
        return f"depth {depth}", {"depth": depth, "replayed": len(pairs), "dropped": dropped,
                                  "orphaned_blocks": [b["number"] for b in blocks]}

    def _wait_depositor_mined(self, timeout: float = 5.0) -> None:
        """The depositor's sent transactions mined first: a reorg must not leave one waiting in the
        pool on a nonce the reorg took back."""
        w3, me = self.depositor.w3, self.depositor.address
        deadline = time.monotonic() + timeout
        while (w3.eth.get_transaction_count(me, "pending") != w3.eth.get_transaction_count(me)
               and time.monotonic() < deadline):
            time.sleep(0.1)

    def _replay(self, blocks: list[Any], head: int) -> tuple[list[list[Any]], int]:
        """[raw tx, block index] pairs for the new branch: per sender, a prefix of its orphaned
        transactions in nonce order (a gap would strand the rest), one block later where possible."""
        by_sender: dict[str, list[tuple[int, int, Any]]] = {}
        for index, block in enumerate(blocks):
            confirmations = head - int(block["number"]) + 1
            for tx in block["transactions"]:
                by_sender.setdefault(str(tx["from"]).lower(), []).append((index, confirmations, tx))
        pairs: list[tuple[int, int, str]] = []
        dropped = 0
        shift = self.rng.randint(0, 1)
        for sender, txs in by_sender.items():
            txs.sort(key=lambda item: int(item[2]["nonce"]))
            if sender == self.depositor.address.lower():
                # Only deposits may vanish (not the token's deployment, say): after the last
                # transaction that is not one.
                kept = [i for i, (_, _, tx) in enumerate(txs) if not self.is_deposit(tx["hash"].to_0x_hex())]
                # At least one vanishes when any may: every reorg tests a retraction.
                low = kept[-1] + 1 if kept else 0
                keep = self.rng.randint(low, len(txs) - 1) if low < len(txs) else len(txs)
            elif sender == self.hot_wallet:
                # Only what no one can have reported confirmed yet may vanish.
                droppable_from = next((i for i, (_, c, _) in enumerate(txs) if c < self.k), len(txs))
                keep = self.rng.randint(droppable_from, len(txs))
            else:
                keep = len(txs)
            dropped += len(txs) - keep
            for index, _, tx in txs[:keep]:
                raw = self.depositor.rpc("eth_getRawTransactionByHash", [tx["hash"].to_0x_hex()])
                pairs.append((min(index + shift, len(blocks) - 1), int(tx["nonce"]), raw))
        pairs.sort(key=lambda p: (p[0], p[1]))
        return [[raw, index] for index, _, raw in pairs], dropped
