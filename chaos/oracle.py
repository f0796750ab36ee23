"""The end checks of a chaos run, against the chain (the truth) and what Kafka carried.

Events are counted by `event_id` (delivery is at-least-once: a repeat with the same id is the same
fact). "Lost" is something owed that never came: a canonical deposit not confirmed, an orphaned
one not retracted, a withdrawal not paid, an account not reported. "Doubled" is something that came
twice or should not stand: two confirmations of one deposit, a withdrawal paid twice, an account
reported twice, a confirmation of a vanished deposit never retracted.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis
from web3.exceptions import TransactionNotFound

from chaos.chain import Depositor
from chaos.load import Deposit, Request
from wallet.state.keyspace import Keyspace

PROBLEMS_SHOWN = 10


@dataclass
class Check:
    name: str
    checked: int = 0
    lost: int = 0
    doubled: int = 0
    other: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.lost == self.doubled == self.other == 0

    def problem(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.problems) < PROBLEMS_SHOWN:
            self.problems.append(f"{kind}: {text}")


@dataclass
class Verdict:
    checks: list[Check]
    events_checked: int

    @property
    def lost(self) -> int:
        return sum(c.lost for c in self.checks)

    @property
    def doubled(self) -> int:
        return sum(c.doubled for c in self.checks)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def _unique(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({e["event_id"]: e for e in events if "event_id" in e}.values())


class Oracle:
    def __init__(self, depositor: Depositor, redis_url: str, key_prefix: str, confirmations: int,
                 hot_wallet: str) -> None:
        self.chain = depositor
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=10)
        self.keys = Keyspace(key_prefix)
        self.k = confirmations
        self.hot_wallet = hot_wallet

    def judge(self, deposits: list[Deposit], requests: list[Request], transaction: list[dict[str, Any]],
              address_created: list[dict[str, Any]], errors: list[dict[str, Any]]) -> Verdict:
        transaction, address_created = _unique(transaction), _unique(address_created)
        head = int(self.chain.w3.eth.block_number)
        checks = [
            *self._deposits(deposits, transaction, head),
            self._withdrawals([r for r in requests if r.kind == "withdrawal"], transaction),
            self._accounts([r for r in requests if r.kind == "account"], address_created, errors),
            self._nonces(),
            self._watermark(head),
        ]
        return Verdict(checks, len(transaction) + len(address_created) + len(_unique(errors)))

    # ---- deposits
    def _deposits(self, deposits: list[Deposit], transaction: list[dict[str, Any]], head: int) -> list[Check]:
        confirmed_once = Check("canonical deposits confirmed exactly once")
        retracted = Check("orphaned deposits retracted, never left confirmed")
        nothing_else = Check("no deposit reported that was not sent")
        events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in transaction:
            if str(event.get("type", "")).startswith("deposit."):
                events[str(event["payload"]["tx_hash"]).lower()].append(event)
        sent = {d.tx.tx_hash.lower(): d for d in deposits}
        for tx_hash in set(events) - set(sent):
            nothing_else.problem("other", f"deposit events for {tx_hash}, which the load never sent")
        nothing_else.checked = len(events)
        for tx_hash, deposit in sent.items():
            mine = events.get(tx_hash, [])
            canonical = self._canonical_block(tx_hash, deposit.kind)
            if canonical is not None and head - canonical[0] + 1 >= self.k:
                confirmed_once.checked += 1
                count = len([e for e in mine if e["type"] == "deposit.confirmed"
                             and e["payload"]["block_hash"].lower() == canonical[1]])
                if count == 0:
                    confirmed_once.problem("lost", f"{deposit.kind} {tx_hash} in block {canonical[0]} never confirmed")
                elif count > 1:
                    confirmed_once.problem("doubled", f"{deposit.kind} {tx_hash} confirmed {count} times")
                if any(e["type"] == "deposit.reverted" and e["payload"]["block_hash"].lower() == canonical[1]
                       for e in mine):
                    confirmed_once.problem("other", f"{tx_hash} retracted in its canonical block {canonical[0]}")
            for block_hash in {e["payload"]["block_hash"].lower() for e in mine}:
                if canonical is not None and block_hash == canonical[1]:
                    continue
                retracted.checked += 1
                on_block = [e for e in mine if e["payload"]["block_hash"].lower() == block_hash]
                was_confirmed = any(e["type"] == "deposit.confirmed" for e in on_block)
                reverts = [e for e in on_block if e["type"] == "deposit.reverted"]
                if not reverts:
                    retracted.problem("doubled" if was_confirmed else "lost",
                                      f"{tx_hash} on orphaned block {block_hash[:12]} "
                                      f"{'confirmed' if was_confirmed else 'seen'}, never retracted")
                elif was_confirmed and not any((r.get("meta") or {}).get("was_confirmed") is True for r in reverts):
                    retracted.problem("other", f"{tx_hash}: retraction of a confirmed deposit without was_confirmed")
        return [confirmed_once, retracted, nothing_else]

    def _canonical_block(self, tx_hash: str, kind: str) -> tuple[int, str] | None:
        """(number, hash) of the block holding `tx_hash` on the chain now, if it paid there (a token
        transfer or a forward leaves a log; one to a contract a reorg took away pays no one)."""
        try:
            receipt = self.chain.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None
        if receipt is None or receipt["status"] != 1 or (kind != "eth" and not receipt["logs"]):
            return None
        return int(receipt["blockNumber"]), receipt["blockHash"].to_0x_hex().lower()

    # ---- withdrawals
    def _withdrawals(self, requests: list[Request], transaction: list[dict[str, Any]]) -> Check:
        check = Check("withdrawals paid exactly once")
        confirmed: dict[str, int] = defaultdict(int)
        failed: set[str] = set()
        for event in transaction:
            request_id = str((event.get("payload") or {}).get("request_id"))
            if event["type"] == "withdrawal.confirmed":
                confirmed[request_id] += 1
            elif event["type"] == "withdrawal.failed":
                failed.add(request_id)
        for request in requests:
            check.checked += 1
            balance = int(self.chain.w3.eth.get_balance(self.chain.w3.to_checksum_address(request.to)))
            if balance == 0:
                check.problem("lost", f"{request.request_id} ({request.channel}) not paid")
            elif balance != request.amount:
                check.problem("doubled", f"{request.request_id} paid {balance / request.amount:g} times its amount")
            if confirmed[request.request_id] != 1:
                check.problem("lost" if confirmed[request.request_id] == 0 else "doubled",
                              f"{request.request_id}: {confirmed[request.request_id]} withdrawal.confirmed events")
            if request.request_id in failed:
                check.problem("other", f"{request.request_id}: withdrawal.failed")
        return check

    # ---- account creations
    def _accounts(self, requests: list[Request], created: list[dict[str, Any]], errors: list[dict[str, Any]]) -> Check:
        check = Check("account creations reported exactly once")
        by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in created:
            by_request[str(event["payload"].get("request_id"))].append(event)
        # A rejection names the request in its echo (Celery) or its raw text (Kafka).
        rejections = [json.dumps(e) for e in errors if e.get("type") == "command.rejected"]
        addresses = [e["payload"]["address"].lower() for e in created]
        if len(addresses) != len(set(addresses)):
            check.problem("doubled", "one address reported for two creations")
        for request in requests:
            check.checked += 1
            count = len(by_request[request.request_id])
            if count != 1:
                check.problem("lost" if count == 0 else "doubled",
                              f"{request.request_id} ({request.channel}): {count} address.created events")
            if any(f'{request.request_id}\\"' in r or f'{request.request_id}"' in r for r in rejections):
                check.problem("other", f"{request.request_id} rejected")
        return check

    # ---- the hot wallet's nonces and the scanner
    def _nonces(self) -> Check:
        check = Check("no nonce gap, nothing left in flight", checked=1)
        address = self.chain.w3.to_checksum_address(self.hot_wallet)
        latest = self.chain.w3.eth.get_transaction_count(address)
        pending = self.chain.w3.eth.get_transaction_count(address, "pending")
        if latest != pending:
            check.problem("other", f"hot wallet: {pending - latest} transaction(s) stuck behind a nonce gap "
                                   f"(mined nonce {latest}, pending {pending})")
        held = self.redis.hlen(self.keys.sender_nonces(self.hot_wallet))
        if held:
            check.problem("other", f"hot wallet: {held} nonce(s) still held by unfinished requests")
        inflight = self.redis.zcard(self.keys.sends_inflight)
        if inflight:
            check.problem("other", f"{inflight} outgoing request(s) still in flight")
        return check

    def _watermark(self, head: int) -> Check:
        check = Check("watermark caught up, outbox drained", checked=1)
        watermark = int(self.redis.get(self.keys.watermark) or -1)
        # The chain keeps mining: a block or two in progress is not a lag.
        if watermark < head - 2:
            check.problem("other", f"watermark {watermark}, head {head}")
        if self.redis.xlen(self.keys.outbox):
            check.problem("other", f"{self.redis.xlen(self.keys.outbox)} event(s) left in the outbox")
        return check

    def close(self) -> None:
        self.redis.close()
