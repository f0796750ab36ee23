"""What the chain says, as frozen domain objects. Raw RPC JSON never travels past the mappers.

Addresses and hashes are lower-case 0x-hex strings; amounts are ints in base units.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Log:
    address: str  # the emitting contract
    topics: tuple[str, ...]
    data: str  # 0x-hex
    log_index: int  # position in the block
    tx_hash: str
    tx_index: int


@dataclass(frozen=True)
class Transaction:
    hash: str
    index: int
    sender: str
    to: str | None  # None for a contract creation
    value: int
    succeeded: bool  # receipt status == 1
    contract_address: str | None  # set for a contract creation


@dataclass(frozen=True)
class InternalTransfer:
    """ETH moved by a call inside a transaction (not the transaction's own value)."""

    tx_hash: str
    tx_index: int
    trace_path: str  # position in the call tree, e.g. "0.2.1": part of the deposit's identity
    sender: str
    to: str
    value: int


@dataclass(frozen=True)
class BlockBundle:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    transactions: tuple[Transaction, ...]
    logs: tuple[Log, ...]  # every log of the block's successful transactions, in block order
    # None when internal transfers were not looked for: `untraced_reason` says why.
    internal_transfers: tuple[InternalTransfer, ...] | None
    # "disabled" (not asked for), "no_tracer" (the node has none), "pruned_state" (the node no
    # longer keeps the state to trace this block): None when traced.
    untraced_reason: str | None = None


@dataclass(frozen=True)
class BlockRef:
    number: int
    hash: str
    parent_hash: str
