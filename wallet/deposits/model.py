"""Deposits: what arrived at one of our addresses, and the events announcing it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from wallet.events import (  # noqa: F401 - the deposit event types are named here too
    EVENT_DEPOSIT_CONFIRMED,
    EVENT_DEPOSIT_REVERTED,
    EVENT_DEPOSIT_SEEN,
    DepositPayload,
    OutgoingEvent,
    new_event,
)

ETH = "ETH"
ETH_DECIMALS = 18

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
    # The block hash is part of the fact: the same deposit seen again in a replacing block is news.
    return new_event(chain_id, event_type, (deposit.deposit_id, deposit.block_hash), payload, key=deposit.to,
                     meta=meta)


def deposit_to_json(deposit: Deposit) -> dict[str, Any]:
    # The amount as a decimal string: orjson refuses ints past 64 bits (about 9.2 ETH in wei), and
    # a block whose deposit cannot be stored would be retried, and fail, forever.
    return {**{k: getattr(deposit, k) for k in Deposit.__dataclass_fields__}, "amount": str(deposit.amount)}


def deposit_from_json(data: dict[str, Any]) -> Deposit:
    return Deposit(**{**data, "amount": int(data["amount"])})
