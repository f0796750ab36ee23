"""Following sent transactions to the end: confirmed K deep, failed, or due for another push.

Runs outside the key-holding worker and never signs. Each tick reads the in-flight requests and the
receipts of all their attempts in batches, then:
- a receipt K blocks deep ends the request: `*.confirmed` (status 1) or `*.failed` with the revert
  reason (status 0, replayed with eth_call on the block before);
- a request whose broadcast was never acknowledged is handed back for a rebroadcast (`resume`), and
  one not mined within `replace_after` for a replacement (`replace`): both are signing-side work,
  returned for the caller to enqueue on the key-holding worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from wallet.events import OutgoingEvent
from wallet.outbox import Outbox
from wallet.sending import revert
from wallet.sending.model import (
    STAGE_CONFIRMED,
    STAGE_FAILED,
    STATUS_CONFIRMED,
    STATUS_FAILED,
    STATUS_SIGNED,
    STATUS_SUBMITTED,
    SendRecord,
    tx_event,
)
from wallet.sending.node import NodeGateway, Receipt
from wallet.sending.planner import call_of
from wallet.sending.store import SendStore, now
from wallet.state.keyspace import Keyspace


@dataclass
class TrackResult:
    in_flight: int = 0
    confirmed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resume: list[str] = field(default_factory=list)  # request ids to broadcast again
    replace: list[str] = field(default_factory=list)  # request ids to replace with higher fees


class Tracker:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, outbox: Outbox, node: NodeGateway,
                 chain_id: int, required_confirmations: int, replace_after_seconds: float) -> None:
        self.store = SendStore(client, keyspace, outbox)
        self._node = node
        self._chain_id = chain_id
        self._k = required_confirmations
        self._replace_after = replace_after_seconds

    def tick(self) -> TrackResult:
        result = TrackResult()
        due = dict(self.store.inflight())
        ids = list(due)
        records = [r for r in self.store.load_many(ids) if r is not None]
        result.in_flight = len(records)
        if not records:
            return result
        head = self._node.head()
        receipts = self._node.receipts(a.tx_hash for r in records for a in r.attempts)
        clock = now()
        pushed: list[str] = []
        for record in records:
            request_id = record.request.request_id
            mined = [receipts[a.tx_hash] for a in record.attempts if a.tx_hash in receipts]
            if mined:
                receipt = mined[0]  # one nonce: at most one attempt can be mined
                if head - receipt.block_number + 1 >= self._k:
                    (result.confirmed if receipt.status == 1 else result.failed).append(request_id)
                    self._finish(record, receipt, head)
                continue
            if due.get(request_id, clock) > clock:
                continue
            if record.status == STATUS_SIGNED:
                result.resume.append(request_id)
            elif record.status == STATUS_SUBMITTED:
                result.replace.append(request_id)
            pushed.append(request_id)
        # Not again before another full wait: the key worker may take a while to get to it.
        self.store.set_due(pushed, clock + self._replace_after)
        return result

    def _finish(self, record: SendRecord, receipt: Receipt, head: int) -> None:
        attempt = next(a for a in record.attempts if a.tx_hash == receipt.tx_hash)
        mined: dict[str, Any] = {
            "block_number": receipt.block_number, "block_hash": receipt.block_hash, "gas_used": receipt.gas_used,
            "effective_gas_price": None if receipt.effective_gas_price is None else str(receipt.effective_gas_price),
            "contract_address": receipt.contract_address.lower() if receipt.contract_address else None,
            "confirmations": head - receipt.block_number + 1,
        }
        if receipt.status == 1:
            status, stage, extra = STATUS_CONFIRMED, STAGE_CONFIRMED, {}
        else:
            why = self._revert_reason(record, attempt.value, receipt)
            status, stage, extra = STATUS_FAILED, STAGE_FAILED, {"code": "reverted", "reason": why}

        def finish(r: SendRecord) -> tuple[SendRecord, list[OutgoingEvent]] | None:
            if not r.in_flight():
                return None
            done = r.model_copy(update={"status": status, "result": {**mined, **extra, "tx_hash": attempt.tx_hash}})
            return done, [tx_event(self._chain_id, stage, done, attempt, **mined, **extra)]

        self.store.update(record.request.request_id, finish)

    def _revert_reason(self, record: SendRecord, value: int, receipt: Receipt) -> str:
        """The revert output as the node's tracer saw it; else the call replayed on the state after
        its block (the transaction's own changes were rolled back; later ones of the block are in)."""
        abi = record.request.error_abi
        output = self._node.revert_output(receipt.tx_hash)
        if output is not None:
            return revert.reason(output, abi)
        to, _, data = call_of(record.request)
        call: dict[str, Any] = {"from": record.sender, "value": hex(value), "data": data,
                                "gas": hex(record.current.gas)}
        if to is not None:
            call["to"] = to
        answer = self._node.call(call, hex(receipt.block_number))
        error = answer.get("error")
        if error is None:
            return "reverted (a replay did not revert: the state it depended on has changed)"
        return revert.reason(revert.revert_data(error), abi, str(error.get("message", "")))
