"""Sweeps: confirmed deposits moved to the cold wallet once an address holds enough of an asset.

A beat-driven policy, outside the key-holding worker: it reads state and the chain and returns the
signing work (`SendRequest`s) for the caller to enqueue on the key worker. Each step is an ordinary
idempotent send, so a tick repeated or run twice hands out the same request ids and nothing is paid
twice.

- Confirmed deposits not yet counted towards a sweep are summed per (address, asset); at the
  asset's threshold a sweep is planned (`sweep.planned`), at most one per address and asset at once.
- ETH: one send of the whole balance minus the exact gas cost (tip = fee cap, so nothing is left).
- ERC-20: if the address lacks the gas for a token transfer, a top-up from the hot wallet first
  (`gas_topup.*` events); once that is confirmed, the token balance goes to the cold wallet
  (`sweep.*` events).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import redis
from eth_utils import to_checksum_address
from pydantic import BaseModel

from wallet.events import EVENT_SWEEP_PLANNED, OutgoingEvent, SweepPlanned, new_event
from wallet.outbox import Outbox
from wallet.sending.model import (
    ETH,
    KIND_GAS_TOPUP,
    KIND_SWEEP,
    STATUS_CONFIRMED,
    STATUS_FAILED,
    SendRequest,
)
from wallet.sending.planner import CONTRACT_GAS_HEADROOM_PERCENT, Planner
from wallet.sending.store import SendStore, now
from wallet.state.deposits import DepositBook
from wallet.state.keyspace import Keyspace

# A top-up covers the token transfer's gas at today's fee cap, plus this margin for fees rising
# before the transfer is signed.
TOPUP_MARGIN_PERCENT = 25
# A step's request is handed out again if no record of it exists after this (its task was lost).
HAND_OUT_AGAIN_SECONDS = 60.0
_SWEEP_NAMESPACE = uuid.UUID("0b6f1f5e-52a7-4c8e-9d2c-7f4a3e1d9b20")


@dataclass(frozen=True)
class SweepConfig:
    cold_wallet: str | None
    thresholds: dict[str, int]  # "ETH" or a token address (any case)
    default_token_threshold: int | None

    def threshold(self, asset: str) -> int | None:
        lowered = {k.lower(): v for k, v in self.thresholds.items()}
        found = lowered.get(asset.lower())
        if found is not None:
            return found
        return None if asset == ETH else self.default_token_threshold


class Sweep(BaseModel):
    sweep_id: str
    address: str
    asset: str
    deposit_ids: list[str]
    stage: Literal["gas", "transfer", "done", "failed"]
    topup: SendRequest | None = None
    transfer: SendRequest | None = None
    handed_out_at: float = 0.0


class SweepPolicy:
    def __init__(self, client: redis.Redis, keyspace: Keyspace, outbox: Outbox, planner: Planner,
                 chain_id: int, config: SweepConfig) -> None:
        self._redis = client
        self._ks = keyspace
        self._outbox = outbox
        self._planner = planner
        self._sends = SendStore(client, keyspace, outbox)
        self._deposits = DepositBook(client, keyspace)
        self._chain_id = chain_id
        self._config = config
        self._cold = to_checksum_address(config.cold_wallet) if config.cold_wallet else None

    def tick(self) -> list[SendRequest]:
        """Plan new sweeps and advance the active ones; returns the sends to hand to the key worker."""
        if not self._cold:
            return []
        self._plan_new()
        work: list[SendRequest] = []
        for sweep_id in [s.decode() for s in self._redis.hvals(self._ks.sweeps_active)]:
            data = self._redis.get(self._ks.sweep(sweep_id))
            if data is None:
                continue
            request = self._advance(Sweep.model_validate_json(data))
            if request is not None:
                work.append(request)
        return work

    # ------------------------------------------------------------------ planning
    def _plan_new(self) -> None:
        groups: dict[tuple[str, str], tuple[int, list[str]]] = {}
        for deposit_id, deposit in self._deposits.confirmed_unswept():
            key = (deposit.to, deposit.asset)
            total, ids = groups.get(key, (0, []))
            groups[key] = (total + deposit.amount, [*ids, deposit_id])
        active = {k.decode() for k in self._redis.hkeys(self._ks.sweeps_active)}
        for (address, asset), (total, ids) in groups.items():
            threshold = self._config.threshold(asset)
            if threshold is None or total < threshold or _pair(address, asset) in active:
                continue
            self._start(address, asset, total, sorted(ids))

    def _start(self, address: str, asset: str, total: int, deposit_ids: list[str]) -> None:
        sweep_id = uuid.uuid5(_SWEEP_NAMESPACE, "|".join(deposit_ids)).hex[:20]
        sweep = Sweep(sweep_id=sweep_id, address=to_checksum_address(address),
                      asset=asset if asset == ETH else to_checksum_address(asset), deposit_ids=deposit_ids,
                      stage="transfer" if asset == ETH else "gas")
        event = _planned_event(self._chain_id, sweep, total, self._cold or "")
        pair = _pair(address, asset)

        def write(pipe: redis.client.Pipeline) -> None:
            if pipe.hexists(self._ks.sweeps_active, pair):
                return
            pipe.multi()
            pipe.set(self._ks.sweep(sweep_id), sweep.model_dump_json())
            pipe.hset(self._ks.sweeps_active, pair, sweep_id)
            self._deposits.mark_swept_in(pipe, deposit_ids)
            self._outbox.append(pipe, event)

        self._redis.transaction(write, self._ks.sweeps_active)

    # ------------------------------------------------------------------ advancing
    def _advance(self, sweep: Sweep) -> SendRequest | None:
        if sweep.stage == "gas":
            return self._gas_step(sweep)
        if sweep.transfer is None:
            sweep = self._save(sweep.model_copy(update={"transfer": self._transfer_request(sweep)}))
        assert sweep.transfer is not None
        return self._follow(sweep, sweep.transfer, on_done="done")

    def _gas_step(self, sweep: Sweep) -> SendRequest | None:
        if sweep.topup is None:
            probe = self._token_request(sweep, 1)
            view = self._planner.read(probe, sweep.address)
            gas = (view.estimate or 100_000) * (100 + CONTRACT_GAS_HEADROOM_PERCENT) // 100
            needed = gas * view.fees.cap * (100 + TOPUP_MARGIN_PERCENT) // 100
            if view.balance >= needed:
                self._save(sweep.model_copy(update={"stage": "transfer"}))
                return None
            topup = SendRequest(kind=KIND_GAS_TOPUP, request_id=f"sweep:{sweep.sweep_id}:gas", to=sweep.address,
                                amount=needed - view.balance, meta=self._meta(sweep))
            sweep = self._save(sweep.model_copy(update={"topup": topup}))
        assert sweep.topup is not None
        return self._follow(sweep, sweep.topup, on_done="transfer")

    def _follow(self, sweep: Sweep, request: SendRequest, on_done: Literal["transfer", "done"]) -> SendRequest | None:
        """Hand `request` out until it has a record; move the sweep on when that record is final."""
        record = self._sends.load(request.request_id)
        if record is None:
            if now() - sweep.handed_out_at < HAND_OUT_AGAIN_SECONDS and sweep.handed_out_at:
                return None
            self._save(sweep.model_copy(update={"handed_out_at": now()}))
            return request
        if record.status == STATUS_CONFIRMED:
            self._save(sweep.model_copy(update={"stage": on_done, "handed_out_at": 0.0}), finished=on_done == "done")
        elif record.status == STATUS_FAILED:
            self._save(sweep.model_copy(update={"stage": "failed"}), finished=True)
        return None

    def _transfer_request(self, sweep: Sweep) -> SendRequest:
        if sweep.asset == ETH:
            return SendRequest(kind=KIND_SWEEP, request_id=f"sweep:{sweep.sweep_id}", sender=sweep.address,
                               to=self._cold, sweep_all=True, meta=self._meta(sweep))
        view = self._planner.read(self._token_request(sweep, 1), sweep.address)
        return self._token_request(sweep, view.token_balance or 0)

    def _token_request(self, sweep: Sweep, amount: int) -> SendRequest:
        return SendRequest(kind=KIND_SWEEP, request_id=f"sweep:{sweep.sweep_id}", sender=sweep.address,
                           to=self._cold, asset=sweep.asset, amount=amount, meta=self._meta(sweep))

    def _meta(self, sweep: Sweep) -> dict[str, Any]:
        return {"sweep_id": sweep.sweep_id, "deposit_ids": sweep.deposit_ids}

    def _save(self, sweep: Sweep, finished: bool = False) -> Sweep:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._ks.sweep(sweep.sweep_id), sweep.model_dump_json())
        if finished:
            pipe.hdel(self._ks.sweeps_active, _pair(sweep.address, sweep.asset))
        pipe.execute()
        return sweep

    def active(self) -> list[Sweep]:
        ids = [s.decode() for s in self._redis.hvals(self._ks.sweeps_active)]
        return [Sweep.model_validate_json(d) for d in self._redis.mget([self._ks.sweep(i) for i in ids]) if d] if ids else []


def _pair(address: str, asset: str) -> str:
    return f"{address.lower()}|{asset.lower() if asset != ETH else ETH}"


def _planned_event(chain_id: int, sweep: Sweep, total: int, cold_wallet: str) -> OutgoingEvent:
    payload = SweepPlanned(sweep_id=sweep.sweep_id, sender=sweep.address.lower(),
                           asset=sweep.asset if sweep.asset == ETH else sweep.asset.lower(),
                           to=cold_wallet.lower(), confirmed_deposits=str(total), deposit_ids=sweep.deposit_ids,
                           gas_topup_first=sweep.stage == "gas")
    return new_event(chain_id, EVENT_SWEEP_PLANNED, (sweep.sweep_id,), payload, key=sweep.address.lower(),
                     meta={"sweep_id": sweep.sweep_id})
