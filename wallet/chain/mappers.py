"""Raw JSON-RPC results (as decoded by orjson) -> the frozen objects of `wallet.chain.model`.

Small, allocation-light functions on the hot path of deposit scanning. Every public function either
returns a model object or raises `ChainDataInvalid`: a missing field, a wrong type or bad hex in the
node's answer never escapes as KeyError/TypeError/ValueError. Addresses, hashes and log data come
out lower-case; quantities are ints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from wallet.chain.model import BlockBundle, BlockRef, InternalTransfer, Log, Transaction
from wallet.errors import ChainDataInvalid

# What malformed JSON makes Python raise while we pick it apart (a list where a dict was expected,
# a missing key, a None, bad hex...).
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)

_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")

# callTracer frame types whose `value` really moves ETH. DELEGATECALL/STATICCALL frames repeat the
# caller's value without moving it; CALLCODE sends it to the caller itself.
_TRANSFER_TYPES = frozenset(("CALL", "CREATE", "CREATE2", "SELFDESTRUCT"))


# ---- field parsers (raise ValueError/TypeError; the public functions turn them into ChainDataInvalid)

def _q(value: Any) -> int:
    """A JSON-RPC quantity ("0x1a") -> int."""
    if value.__class__ is not str or value[:2] != "0x":
        raise ValueError(f"not a hex quantity: {_short(value)}")
    return int(value, 16)


def _hash(value: Any) -> str:
    if value.__class__ is not str or _HASH.fullmatch(value) is None:
        raise ValueError(f"not a 32-byte hash: {_short(value)}")
    return value.lower()


def _addr(value: Any) -> str:
    if value.__class__ is not str or _ADDRESS.fullmatch(value) is None:
        raise ValueError(f"not an address: {_short(value)}")
    return value.lower()


def _data(value: Any) -> str:
    if value.__class__ is not str or _DATA.fullmatch(value) is None:
        raise ValueError(f"not hex data: {_short(value)}")
    return value.lower()


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _malformed(what: str, exc: Exception) -> ChainDataInvalid:
    return ChainDataInvalid(f"malformed {what} from the node: {type(exc).__name__}: {_short(str(exc), 160)}")


# ---- public mappers

def quantity(value: Any, what: str = "quantity") -> int:
    try:
        return _q(value)
    except MALFORMED as exc:
        raise _malformed(what, exc) from None


def block_ref(block: Any) -> BlockRef:
    """eth_getBlockByNumber result (full or not) -> BlockRef."""
    try:
        return BlockRef(number=_q(block["number"]), hash=_hash(block["hash"]),
                        parent_hash=_hash(block["parentHash"]))
    except MALFORMED as exc:
        raise _malformed("block", exc) from None


CALL_TRACER = "callTracer"  # debug_traceBlockByNumber(n, {"tracer": "callTracer"}): geth, Anvil, reth
PARITY_TRACES = "trace_block"  # trace_block(n): erigon, nethermind, Anvil (OpenEthereum format)


def block_bundle(block: Any, receipts: Any, traces: Any | None, trace_format: str = CALL_TRACER,
                 untraced_reason: str | None = None) -> BlockBundle:
    """eth_getBlockByNumber(n, true) + its receipts (eth_getBlockReceipts(n), or each
    eth_getTransactionReceipt in transaction order) [+ the block's traces in `trace_format`] ->
    BlockBundle. `traces=None`: internal transfers were not looked for (`untraced_reason` says why).

    Raises ChainDataInvalid when the parts do not belong together (receipts of another block: a
    reorg between the calls) or anything is malformed.
    """
    try:
        bundle = _block_bundle(block, receipts, None)
        if traces is None:
            return _with_traces(bundle, None, untraced_reason or "disabled")
        found = (_internal_transfers(traces, bundle.transactions) if trace_format == CALL_TRACER
                 else _parity_transfers(traces, bundle.transactions))
        return _with_traces(bundle, found, None)
    except MALFORMED as exc:
        raise _malformed("block data", exc) from None


def _with_traces(bundle: BlockBundle, found: tuple[InternalTransfer, ...] | None, reason: str | None) -> BlockBundle:
    return BlockBundle(bundle.number, bundle.hash, bundle.parent_hash, bundle.timestamp, bundle.transactions,
                       bundle.logs, found, reason)


def parity_internal_transfers(traces: Any, transactions: Sequence[Transaction]) -> tuple[InternalTransfer, ...]:
    """trace_block(n) result (OpenEthereum/erigon/nethermind format) -> the ETH moved by inner calls,
    with the same rules and `trace_path`s as `internal_transfers` (traceAddress is the same path)."""
    try:
        return _parity_transfers(traces, transactions)
    except MALFORMED as exc:
        raise _malformed("block trace", exc) from None


def internal_transfers(traces: Any, transactions: Sequence[Transaction]) -> tuple[InternalTransfer, ...]:
    """debug_traceBlockByNumber(n, {"tracer": "callTracer"}) result -> the ETH moved by inner calls.

    Every nested frame (not the top one: that is the transaction) of type CALL/CREATE/CREATE2/
    SELFDESTRUCT with value > 0, in pre-order; frames with an "error" are skipped with all their
    children (reverted), and so are all frames of a failed transaction. `trace_path` is the dotted
    index path from the top frame ("1.0": the top frame's 2nd child's 1st child).
    """
    try:
        return _internal_transfers(traces, transactions)
    except MALFORMED as exc:
        raise _malformed("call trace", exc) from None


# ---- implementation

def _block_bundle(block: Any, receipts: Any, traces: Any | None) -> BlockBundle:
    number = _q(block["number"])
    block_hash = _hash(block["hash"])
    txs_json = block["transactions"]
    if txs_json.__class__ is not list or receipts.__class__ is not list:
        raise TypeError("transactions and receipts must be lists")
    if len(receipts) != len(txs_json):
        raise ChainDataInvalid(
            f"block {number}: {len(receipts)} receipts for {len(txs_json)} transactions (reorg between calls?)",
            details={"height": number, "block_hash": block_hash},
        )
    transactions: list[Transaction] = []
    logs: list[Log] = []
    for tx, receipt in zip(txs_json, receipts, strict=True):
        tx_hash = _hash(tx["hash"])
        receipt_block = _hash(receipt["blockHash"])
        if receipt_block != block_hash:
            raise ChainDataInvalid(
                f"block {number}: a receipt belongs to block {receipt_block}, not {block_hash} (reorg between calls?)",
                details={"height": number, "block_hash": block_hash, "receipt_block_hash": receipt_block},
            )
        if _hash(receipt["transactionHash"]) != tx_hash:
            raise ChainDataInvalid(
                f"block {number}: receipts do not match the block's transactions (reorg between calls?)",
                details={"height": number, "block_hash": block_hash, "tx_hash": tx_hash},
            )
        index = _q(tx["transactionIndex"])
        status = _q(receipt["status"])
        if status > 1:
            raise ValueError(f"receipt status {status}")
        succeeded = status == 1
        to = tx.get("to")
        contract_address = None
        if to is None:
            created = receipt.get("contractAddress")
            if created is not None:
                contract_address = _addr(created)
        else:
            to = _addr(to)
        transactions.append(Transaction(tx_hash, index, _addr(tx["from"]), to, _q(tx["value"]),
                                        succeeded, contract_address))
        if succeeded:
            for log in receipt["logs"]:
                logs.append(Log(_addr(log["address"]), tuple(map(_hash, log["topics"])), _data(log["data"]),
                                _q(log["logIndex"]), tx_hash, index))
    txs = tuple(transactions)
    return BlockBundle(
        number=number,
        hash=block_hash,
        parent_hash=_hash(block["parentHash"]),
        timestamp=_q(block["timestamp"]),
        transactions=txs,
        logs=tuple(logs),
        internal_transfers=None if traces is None else _internal_transfers(traces, txs),
    )


def _internal_transfers(traces: Any, transactions: Sequence[Transaction]) -> tuple[InternalTransfer, ...]:
    if traces.__class__ is not list:
        raise TypeError("block trace must be a list")
    if len(traces) != len(transactions):
        raise ChainDataInvalid(f"{len(traces)} call traces for {len(transactions)} transactions (reorg between calls?)")
    out: list[InternalTransfer] = []
    for tx, item in zip(transactions, traces, strict=True):
        # geth >= 1.11 and Anvil: {"txHash", "result"}; older nodes: {"result"}; failed: {"error"}.
        if "result" not in item:
            if "error" in item:
                raise ChainDataInvalid(f"the node could not trace tx {tx.hash}: {_short(item['error'])}")
            raise KeyError("result")
        traced_hash = item.get("txHash")
        if traced_hash is not None and _hash(traced_hash) != tx.hash:
            raise ChainDataInvalid(f"call traces do not match the block's transactions at tx {tx.hash} (reorg?)")
        top = item["result"]
        if not tx.succeeded or "error" in top:
            continue
        _walk(top, tx, out)
    return tuple(out)


def _walk(top: dict[str, Any], tx: Transaction, out: list[InternalTransfer]) -> None:
    # Iterative pre-order walk: call trees may be ~1,000 deep, past Python's recursion limit.
    calls = top.get("calls")
    if not calls:
        return
    stack = [(calls[i], str(i)) for i in range(len(calls) - 1, -1, -1)]
    while stack:
        frame, path = stack.pop()
        if "error" in frame:
            continue  # reverted: neither it nor its children moved anything
        value = frame.get("value")
        if value is not None:
            kind = frame["type"]
            if kind not in _TRANSFER_TYPES:
                kind = kind.upper()
            if kind in _TRANSFER_TYPES:
                amount = _q(value)
                if amount:
                    out.append(InternalTransfer(tx.hash, tx.index, path, _addr(frame["from"]),
                                                _addr(frame["to"]), amount))
        children = frame.get("calls")
        if children:
            stack.extend((children[i], f"{path}.{i}") for i in range(len(children) - 1, -1, -1))


def _parity_transfers(traces: Any, transactions: Sequence[Transaction]) -> tuple[InternalTransfer, ...]:
    if traces.__class__ is not list:
        raise TypeError("block trace must be a list")
    by_hash = {tx.hash: tx for tx in transactions}
    out: list[InternalTransfer] = []
    failed: dict[str, list[tuple[int, ...]]] = {}  # tx hash -> trace addresses of reverted frames
    seen_txs: set[str] = set()
    for trace in traces:
        tx_hash = trace.get("transactionHash")
        if tx_hash is None:
            continue  # block and uncle rewards: not a transaction's transfer
        tx = by_hash.get(_hash(tx_hash))
        if tx is None:
            raise ChainDataInvalid(f"a trace names tx {_short(tx_hash)}, not in the block (reorg between calls?)")
        seen_txs.add(tx.hash)
        path = tuple(int(i) for i in trace["traceAddress"])
        if not path or not tx.succeeded:
            continue  # the transaction itself, or all of a failed transaction
        reverted = failed.setdefault(tx.hash, [])
        if any(path[: len(r)] == r for r in reverted):
            continue  # inside a reverted frame: nothing it did stands
        if trace.get("error"):
            reverted.append(path)
            continue
        kind = trace["type"]
        action = trace["action"]
        if kind == "call":
            if str(action.get("callType", "call")).lower() != "call":
                continue  # delegatecall/staticcall repeat the caller's value; callcode pays itself
            sender, to, amount = action["from"], action["to"], action["value"]
        elif kind == "create":
            sender, to, amount = action["from"], trace["result"]["address"], action["value"]
        elif kind in ("suicide", "selfdestruct"):
            sender, to, amount = action["address"], action["refundAddress"], action["balance"]
        else:
            continue
        value = _q(amount)
        if value:
            out.append(InternalTransfer(tx.hash, tx.index, ".".join(map(str, path)), _addr(sender), _addr(to), value))
    if transactions and not seen_txs and any(tx.succeeded for tx in transactions):
        raise ChainDataInvalid(f"no traces for a block of {len(transactions)} transactions (reorg between calls?)")
    return tuple(out)
