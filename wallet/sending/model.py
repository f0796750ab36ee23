"""Outgoing requests and their records: what was asked, what was signed, what the chain did.

A `SendRequest` is one thing a caller wants moved or called (a withdrawal, a sweep step, a
contract deploy or transaction), identified by the caller's idempotency key. Its `SendRecord` holds
every signed attempt (the raw bytes, so a retry rebroadcasts exactly them) and the outcome. Records
are stored as one JSON value, read-modify-written under WATCH.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wallet.events import EVENT_NONCE_GAP_FILLED, NonceGapFilled, OutgoingEvent, TxPayload, new_event

ETH = "ETH"

# What a request is for; also the first part of its event types (`withdrawal.submitted`, ...).
KIND_WITHDRAWAL = "withdrawal"
KIND_SWEEP = "sweep"
KIND_GAS_TOPUP = "gas_topup"
KIND_DEPLOY = "contract.deploy"
KIND_TRANSACT = "contract.transact"
Kind = Literal["withdrawal", "sweep", "gas_topup", "contract.deploy", "contract.transact"]

STAGE_SUBMITTED = "submitted"
STAGE_CONFIRMED = "confirmed"
STAGE_FAILED = "failed"
STAGE_REPLACED = "replaced"

# Record status: signed (stored, broadcast not yet acknowledged) -> submitted (the node took it)
# -> confirmed | failed. Only the first two are in flight.
STATUS_SIGNED = "signed"
STATUS_SUBMITTED = "submitted"
STATUS_CONFIRMED = "confirmed"
STATUS_FAILED = "failed"
IN_FLIGHT = (STATUS_SIGNED, STATUS_SUBMITTED)


class SendRequest(BaseModel):
    """A validated outgoing request. Addresses are checksummed; `asset` is "ETH" or a checksummed
    token address; amounts are base units."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    request_id: str
    sender: str | None = None  # None: the hot wallet
    to: str | None = None  # None only for a contract deploy
    asset: str = ETH
    amount: int = 0  # ETH value, or token units for an ERC-20 transfer
    data: str = "0x"  # call data (contract deploys and transactions)
    # ETH sweeps: send everything but the exact gas cost, worked out at signing.
    sweep_all: bool = False
    # The contract's custom errors (ABI entries), so a revert found after mining can be named.
    error_abi: list[dict[str, Any]] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What must match when the same idempotency key comes again (meta may differ)."""
        return self.model_dump(exclude={"meta"})


class Fees(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_fee_per_gas: int | None = None  # EIP-1559
    max_priority_fee_per_gas: int | None = None
    gas_price: int | None = None  # legacy chains

    @property
    def cap(self) -> int:
        """Most wei one unit of gas can cost."""
        return self.gas_price if self.gas_price is not None else int(self.max_fee_per_gas or 0)

    def tx_fields(self) -> dict[str, int]:
        if self.gas_price is not None:
            return {"gasPrice": self.gas_price}
        return {"maxFeePerGas": int(self.max_fee_per_gas or 0),
                "maxPriorityFeePerGas": int(self.max_priority_fee_per_gas or 0)}


class Attempt(BaseModel):
    """One signed transaction for a request. Replacements share the nonce, so at most one lands."""

    tx_hash: str
    raw: str  # 0x hex of the signed transaction: rebroadcast as is, never re-signed
    nonce: int
    gas: int
    value: int
    fees: Fees
    signed_at: float
    # Set when the node refused it for good (a nonce taken by someone else): never sent again.
    void: bool = False
    # Whether its acceptance by the node has been announced (`*.submitted` or `*.replaced`).
    announced: bool = False


class SendRecord(BaseModel):
    request: SendRequest
    sender: str  # checksummed; resolved from the hot wallet when the request left it open
    status: str
    attempts: list[Attempt] = Field(default_factory=list)
    created_at: float
    submitted_at: float | None = None  # last time a broadcast was acknowledged
    result: dict[str, Any] | None = None  # receipt summary, or the failure's code and reason
    # HMAC (key derived from the master key) over the request and sender, written by the key
    # worker: a record forged in Redis does not verify and is never signed again.
    seal: str | None = None

    @property
    def current(self) -> Attempt:
        live = [a for a in self.attempts if not a.void]
        return live[-1] if live else self.attempts[-1]

    @property
    def nonce(self) -> int:
        return self.current.nonce

    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT


def tx_event(chain_id: int, stage: str, record: SendRecord, attempt: Attempt | None = None,
             **extra: Any) -> OutgoingEvent:
    """`<kind>.<stage>` on `transaction`, keyed by the sender so its events stay in order."""
    attempt = attempt or record.current
    request = record.request
    event_type = f"{request.kind}.{stage}"
    payload = TxPayload(
        request_id=request.request_id, kind=request.kind, sender=record.sender.lower(),
        to=request.to.lower() if request.to else None, asset=request.asset if request.asset == ETH
        else request.asset.lower(), amount=str(attempt.value if request.sweep_all else request.amount),
        nonce=attempt.nonce, tx_hash=attempt.tx_hash, gas_limit=attempt.gas,
        max_fee_per_gas=_text(attempt.fees.max_fee_per_gas),
        max_priority_fee_per_gas=_text(attempt.fees.max_priority_fee_per_gas),
        gas_price=_text(attempt.fees.gas_price), **extra,
    )
    return new_event(chain_id, event_type, (request.request_id, attempt.tx_hash), payload,
                     key=record.sender.lower(), meta=request.meta)


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def gap_filled_event(chain_id: int, sender: str, nonce: int, tx_hash: str, node_answer: str) -> OutgoingEvent:
    """A sender's nonce that no request held any more was used by a 0-value transfer to itself,
    so its later transactions could be mined."""
    payload = NonceGapFilled(sender=sender.lower(), nonce=nonce, tx_hash=tx_hash, node_answer=node_answer)
    return new_event(chain_id, EVENT_NONCE_GAP_FILLED, (sender.lower(), nonce, tx_hash), payload,
                     key=sender.lower())
