"""Deposits: what arrived at one of our addresses, and the events announcing it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wallet.events import TOPIC_TRANSACTION, Envelope, OutgoingEvent, event_id_for, utc_now

ETH = "ETH"
ETH_DECIMALS = 18

EVENT_DEPOSIT_SEEN = "deposit.seen"
EVENT_DEPOSIT_CONFIRMED = "deposit.confirmed"
EVENT_DEPOSIT_REVERTED = "deposit.reverted"

KIND_ETH = "eth"  # a transaction's own value
KIND_ERC20 = "erc20"  # a Transfer log
KIND_INTERNAL = "internal"  # ETH moved by a call inside a transaction


@dataclass(frozen=True)
class Deposit:
    kind: str
    tx_hash: str
    log_index: int | None
    trace_path: str | None
    block_number: int
    block_hash: str
    sender: str
    to: str
    asset: str  # "ETH" or the token contract address
    amount: int  # base units

    @property
    def deposit_id(self) -> str:
        """Identity within a chain: (tx hash, log index or trace position). Stable across reorgs
        that keep the transaction's position; a new position is a new deposit."""
        position = self.log_index if self.kind == KIND_ERC20 else (self.trace_path or "tx")
        return f"{self.tx_hash}:{self.kind}:{position}"


@dataclass(frozen=True)
class TokenInfo:
    symbol: str | None
    decimals: int | None


class DepositPayload(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    deposit_id: str
    kind: str
    tx_hash: str
    log_index: int | None
    trace_path: str | None
    block_number: int
    block_hash: str
    sender: str = Field(serialization_alias="from")
    to: str
    asset: str
    token_symbol: str | None
    token_decimals: int | None
    amount: str  # base units, as a string: JSON numbers lose precision past 2**53
    amount_display: str | None  # in whole units; None when the token did not say its decimals
    confirmations: int
    required_confirmations: int


def display_amount(amount: int, decimals: int | None) -> str | None:
    if decimals is None:
        return None
    value = Decimal(amount).scaleb(-decimals)
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def deposit_event(chain_id: int, event_type: str, deposit: Deposit, token: TokenInfo,
                  confirmations: int, required: int, meta: dict[str, Any] | None = None) -> OutgoingEvent:
    payload = DepositPayload(
        deposit_id=deposit.deposit_id, kind=deposit.kind, tx_hash=deposit.tx_hash,
        log_index=deposit.log_index, trace_path=deposit.trace_path, block_number=deposit.block_number,
        block_hash=deposit.block_hash, sender=deposit.sender, to=deposit.to, asset=deposit.asset,
        token_symbol=token.symbol, token_decimals=token.decimals, amount=str(deposit.amount),
        amount_display=display_amount(deposit.amount, token.decimals), confirmations=confirmations,
        required_confirmations=required,
    )
    envelope = Envelope(
        # The block hash is part of the fact: the same deposit seen again in a replacing block is news.
        event_id=event_id_for(chain_id, event_type, deposit.deposit_id, deposit.block_hash),
        type=event_type,
        chain_id=chain_id,
        occurred_at=utc_now(),
        payload=payload.model_dump(by_alias=True),
        meta=meta or {},
    )
    return OutgoingEvent(topic=TOPIC_TRANSACTION, key=deposit.to, envelope=envelope)


def deposit_to_json(deposit: Deposit) -> dict[str, Any]:
    # The amount as a decimal string: orjson refuses ints past 64 bits (about 9.2 ETH in wei), and
    # a block whose deposit cannot be stored would be retried, and fail, forever.
    return {**{k: getattr(deposit, k) for k in Deposit.__dataclass_fields__}, "amount": str(deposit.amount)}


def deposit_from_json(data: dict[str, Any]) -> Deposit:
    return Deposit(**{**data, "amount": int(data["amount"])})
